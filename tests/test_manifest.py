import shutil

import pytest
from helpers import MANIFEST_HEADER

from imginav_core.data.manifest import read_manifest, split_records
from imginav_core.errors import ManifestError


def _write(folder, text, name="layouts.csv"):
    path = folder / name
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    (tmp_path / "data").mkdir()
    path = _write(
        tmp_path / "data", MANIFEST_HEADER + "s1,room,0001,img/a.png,false\ns1,scene,scene,/abs/b.png,False\n"
    )
    records = read_manifest(path).records
    assert records[0].path == (tmp_path / "data" / "img" / "a.png").resolve()
    assert str(records[1].path) == "/abs/b.png"
    assert [r.label for r in records] == [0, 1]


def test_is_empty_spellings_and_dropping_empty_layouts(tmp_path):
    rows = ["true", "false", "True", "False", "1", "0", "TRUE"]
    text = MANIFEST_HEADER + "".join(f"s,room,{i},{i}.png,{v}\n" for i, v in enumerate(rows))
    manifest = read_manifest(_write(tmp_path, text))
    assert [r.room_id for r in manifest.records] == ["1", "3", "5"]
    assert manifest.dropped_empty == 4
    kept_all = read_manifest(_write(tmp_path, text), drop_empty=False)
    assert [r.is_empty for r in kept_all.records] == [True, False, True, False, True, False, True]


def test_bad_is_empty_names_the_line(tmp_path):
    path = _write(tmp_path, MANIFEST_HEADER + "s,room,1,a.png,false\ns,room,2,b.png,maybe\n")
    with pytest.raises(ManifestError, match=r"line 3.*is_empty = 'maybe'"):
        read_manifest(path)


def test_missing_column_unknown_type_and_empty_files_are_clear_errors(tmp_path):
    with pytest.raises(ManifestError, match="missing column.*is_empty"):
        read_manifest(_write(tmp_path, "scene_id,type,room_id,layout_path\ns,room,1,a.png\n"))
    with pytest.raises(ManifestError, match=r"line 2: type = 'kitchen'"):
        read_manifest(_write(tmp_path, MANIFEST_HEADER + "s,kitchen,1,a.png,false\n"))
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(_write(tmp_path, ""))
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(_write(tmp_path, MANIFEST_HEADER))
    with pytest.raises(ManifestError, match="no layouts left"):
        read_manifest(_write(tmp_path, MANIFEST_HEADER + "s,room,1,a.png,true\n"))
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


def test_duplicate_rows_are_dropped_and_conflicting_ones_refused(tmp_path):
    manifest = read_manifest(
        _write(tmp_path, MANIFEST_HEADER + "s,room,1,a.png,false\ns,room,1,a.png,false\ns,room,2,b.png,false\n")
    )
    assert len(manifest.records) == 2 and manifest.dropped_duplicates == [3]
    with pytest.raises(ManifestError, match="line 3.*also listed on line 2"):
        read_manifest(_write(tmp_path, MANIFEST_HEADER + "s,room,1,a.png,false\ns,scene,1,a.png,false\n"))


def test_split_is_deterministic_disjoint_and_80_20(synthetic_manifest, tmp_path):
    records = read_manifest(synthetic_manifest).records
    train, val = split_records(records, 0.2, 42)
    again_train, again_val = split_records(records, 0.2, 42)
    assert [r.path for r in train] == [r.path for r in again_train]
    assert {r.path for r in train}.isdisjoint(r.path for r in val)
    assert len(train) + len(val) == len(records)
    assert len(val) == round(0.2 * len(records))
    other_train, _ = split_records(records, 0.2, 7)
    assert [r.path for r in other_train] != [r.path for r in train]
    # the split follows the manifest's content, not where the folder lives
    copy = tmp_path / "moved"
    shutil.copytree(synthetic_manifest.parent, copy)
    moved_train, _ = split_records(read_manifest(copy / "layouts.csv").records, 0.2, 42)
    assert [r.path.name for r in moved_train] == [r.path.name for r in train]


def _houses(folder, houses=30, seed=0):
    """A manifest like the real one: per house (scene_id) one scene layout and 1-5 room layouts
    cropped from it, rows sorted by house."""
    import random

    rng = random.Random(seed)
    rows = []
    for h in range(houses):
        rows.append(f"house{h:03d},scene,scene,h{h}_scene.png,false\n")
        rows += [f"house{h:03d},room,{r},h{h}_room{r}.png,false\n" for r in range(rng.randint(1, 5))]
    return rows


def test_the_split_never_separates_a_scene_from_its_rooms_and_is_deterministic(tmp_path):
    rows = _houses(tmp_path)
    records = read_manifest(_write(tmp_path, MANIFEST_HEADER + "".join(rows))).records
    for seed in range(20):
        train, val = split_records(records, 0.2, seed)
        train_houses, val_houses = {r.scene_id for r in train}, {r.scene_id for r in val}
        assert train_houses.isdisjoint(val_houses), seed
        assert len(train) + len(val) == len(records) and train and val
        assert abs(len(val) - 0.2 * len(records)) <= 6  # whole houses: within one house of 20 %
    # the same seed gives the same split, whatever the order of the rows
    reordered = read_manifest(_write(tmp_path, MANIFEST_HEADER + "".join(reversed(rows)), "reversed.csv")).records
    assert {r.path.name for r in split_records(reordered, 0.2, 42)[1]} == {
        r.path.name for r in split_records(records, 0.2, 42)[1]
    }
    assert {r.path.name for r in split_records(records, 0.2, 7)[1]} != {
        r.path.name for r in split_records(records, 0.2, 42)[1]
    }


def test_one_house_cannot_be_split_by_scene(tmp_path):
    records = read_manifest(
        _write(tmp_path, MANIFEST_HEADER + "h,scene,scene,a.png,false\nh,room,1,b.png,false\n")
    ).records
    with pytest.raises(ManifestError, match="needs at least 2 scenes"):
        split_records(records, 0.2, 42)
