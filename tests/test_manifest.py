import csv
import io
import shutil

import numpy as np
import pytest
from helpers import MANIFEST_HEADER, V1, small_config
from PIL import Image

from imginav_core.data.batches import load_data
from imginav_core.data.manifest import (
    SIDES,
    assign_sides,
    group_layouts,
    read_manifest,
    side_targets,
    split_figures,
    split_records,
)
from imginav_core.data.synthetic import generate_layouts
from imginav_core.errors import ManifestError
from imginav_core.palette import PALETTE


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


def _all_in_one(layouts_csv, viewpoints=3, name="all_in_one.csv"):
    """The all-in-one manifest equivalent to a layouts.csv: ``viewpoints`` rows per layout (every
    layout's first viewpoint, then every layout's second, ...: a layout's rows are far apart), the
    columns in that format's order, and columns the reader must ignore (one holding commas)."""
    header = "sample_id sample_type scene_id room_id pov_type viewpoint pov_image pov_embedding layout_image"
    header = header.split() + ["layout_embedding", "is_empty"]
    text = io.StringIO()
    writer = csv.DictWriter(text, header, lineterminator="\n")
    writer.writeheader()
    layouts = list(csv.DictReader(layouts_csv.open()))
    for v in range(viewpoints):
        for k, row in enumerate(layouts):
            writer.writerow(
                {
                    "sample_id": f"{k}_{v}",
                    "sample_type": row["type"],
                    "scene_id": row["scene_id"],
                    "room_id": row["room_id"],
                    "pov_type": "seg" if v % 2 else "tex",
                    "viewpoint": f"v{v}",
                    "pov_image": f"povs/{k}_{v}.png",
                    "pov_embedding": f"[0.1, {v}]",
                    "layout_image": row["layout_path"],
                    "layout_embedding": f"emb/{k}.pt",
                    "is_empty": row["is_empty"].capitalize(),
                }
            )
    return _write(layouts_csv.parent, text.getvalue(), name)


def _same(record):
    return record.scene_id, record.type, record.room_id, record.path, record.is_empty


def test_the_all_in_one_manifest_reads_as_the_layouts_it_lists(tmp_path):
    """64 layouts with 3 viewpoint rows each: 192 rows, read as the 64 records of the equivalent
    layouts.csv (the same paths, scenes, rooms, types and emptiness, in the same order), and the
    summary says once what was collapsed into what."""
    layouts_csv = generate_layouts(tmp_path / "set", samples=64, resolution=16, seed=1)
    all_in_one = _all_in_one(layouts_csv)
    for drop_empty in (False, True):
        expected = read_manifest(layouts_csv, drop_empty=drop_empty)
        manifest = read_manifest(all_in_one, drop_empty=drop_empty)
        assert [_same(r) for r in manifest.records] == [_same(r) for r in expected.records]
        assert manifest.dropped_empty == expected.dropped_empty and manifest.dropped_duplicates == []
    assert len(read_manifest(all_in_one, drop_empty=False).records) == 64
    assert all(r.path.is_file() for r in manifest.records)  # relative to the manifest's folder
    assert manifest.records[0].line == 2  # a layout's first row names it in messages
    kept = len(manifest.records)
    assert (
        f"all_in_one.csv: 192 rows collapsed into 64 layouts (an all-in-one manifest, one row per viewpoint), "
        f"{kept} layouts kept"
    ) in manifest.summary()
    assert manifest.summary().count("collapsed") == 1


@pytest.mark.parametrize("column,other", [("is_empty", "True"), ("scene_id", "elsewhere"), ("sample_type", "room")])
def test_rows_of_one_layout_that_disagree_are_refused_naming_both_lines(tmp_path, column, other):
    layouts_csv = generate_layouts(tmp_path / "set", samples=64, resolution=16, seed=1)
    rows = list(csv.reader(_all_in_one(layouts_csv).open()))
    header = rows[0]
    layout, original = rows[1][header.index("layout_image")], rows[1][header.index(column)]
    assert rows[65][header.index("layout_image")] == layout  # line 66: the same layout's second viewpoint
    rows[65][header.index(column)] = other
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    path = _write(layouts_csv.parent, text.getvalue(), "disagreeing.csv")
    expected = (
        rf"disagreeing.csv, line 66: {layout} is also listed on line 2 with a different {column} "
        rf"\({column} {original} on line 2, {other} on line 66\); the rows of one layout must agree on "
        r"scene_id, sample_type, is_empty; set data.skip_broken: true"
    )
    with pytest.raises(ManifestError, match=expected):
        read_manifest(path)
    manifest = read_manifest(path, drop_empty=False, skip_broken=True)  # the later row left out
    assert len(manifest.records) == 64 and len(manifest.skipped) == 1 and "line 66" in manifest.skipped[0]
    assert "192 rows collapsed into 64 layouts" in manifest.summary()
    assert "1 broken rows skipped" in manifest.summary()


def test_a_broken_all_in_one_row_names_its_own_column(tmp_path):
    header = "sample_id,sample_type,scene_id,room_id,viewpoint,layout_image,is_empty\n"
    path = _write(tmp_path, header + "0,scene,s,scene,v0,a.png,false\n1,kitchen,s,1,v0,b.png,false\n")
    with pytest.raises(ManifestError, match=r"line 3: sample_type = 'kitchen'; expected 'room' or 'scene'"):
        read_manifest(path)
    path = _write(tmp_path, header + "0,scene,s,scene,v0,a.png,false\n1,room,s,1,v0,,false\n")
    with pytest.raises(ManifestError, match=r"line 3: layout_image is empty"):
        read_manifest(path)


def test_a_header_of_neither_format_is_refused_naming_what_each_needs(tmp_path):
    path = _write(tmp_path, "id,kind,image,empty\n1,room,a.png,false\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: a header of neither manifest format")
    assert "for layouts.csv (which needs scene_id, type, room_id, layout_path, is_empty)" in message
    assert "for the all-in-one manifest (which needs scene_id, sample_type, room_id, layout_image, is_empty)" in message
    assert message.endswith("found id, kind, image, empty")
    # half of each is still neither: what is missing is named per format
    path = _write(tmp_path, "scene_id,sample_type,room_id,layout_path,is_empty\ns,room,1,a.png,false\n")
    with pytest.raises(ManifestError, match=r"missing column\(s\) type for layouts.csv .* or layout_image for the all"):
        read_manifest(path)


def _sides(split):
    return {side: split.side(side) for side in SIDES}


def test_split_is_deterministic_disjoint_and_70_10_20(synthetic_manifest, tmp_path):
    records = read_manifest(synthetic_manifest).records
    split = split_records(records, None, 0.1, 0.2, 42)
    sides = _sides(split)
    assert [r.path for r in sides["train"]] == [
        r.path for r in _sides(split_records(records, None, 0.1, 0.2, 42))["train"]
    ]
    assert sum(map(len, sides.values())) == len(records)
    assert len({r.path for side in sides.values() for r in side}) == len(records)  # each layout on one side
    largest = max(np.bincount(split.groups))
    for side, fraction in (("val", 0.1), ("test", 0.2)):
        assert abs(len(sides[side]) - fraction * len(records)) < 2 * largest, side
    assert [r.path for r in _sides(split_records(records, None, 0.1, 0.2, 7))["train"]] != [
        r.path for r in sides["train"]
    ]
    # the split follows the manifest's content, not where the folder lives
    copy = tmp_path / "moved"
    shutil.copytree(synthetic_manifest.parent, copy)
    moved = _sides(split_records(read_manifest(copy / "layouts.csv").records, None, 0.1, 0.2, 42))
    assert {s: [r.path.name for r in moved[s]] for s in SIDES} == {s: [r.path.name for r in sides[s]] for s in SIDES}


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
        sides = _sides(split_records(records, None, 0.1, 0.2, seed))
        houses = {side: {r.scene_id for r in members} for side, members in sides.items()}
        assert not (
            houses["train"] & houses["val"] or houses["train"] & houses["test"] or houses["val"] & houses["test"]
        )
        assert sum(map(len, sides.values())) == len(records) and all(sides.values()), seed
        # whole houses of at most 6 layouts: within two houses of the fractions
        assert abs(len(sides["val"]) - 0.1 * len(records)) < 12 and abs(len(sides["test"]) - 0.2 * len(records)) < 12
    # the same seed gives the same split, whatever the order of the rows
    reordered = read_manifest(_write(tmp_path, MANIFEST_HEADER + "".join(reversed(rows)), "reversed.csv")).records
    for side in SIDES:
        assert {r.path.name for r in split_records(reordered, None, 0.1, 0.2, 42).side(side)} == {
            r.path.name for r in split_records(records, None, 0.1, 0.2, 42).side(side)
        }
    assert {r.path.name for r in split_records(records, None, 0.1, 0.2, 7).side("test")} != {
        r.path.name for r in split_records(records, None, 0.1, 0.2, 42).side("test")
    }


def test_identical_layouts_join_their_scenes_in_one_group_whatever_the_row_order(tmp_path):
    """Scenes a and b share a layout, b and c another: a, b and c are one group (a chain);
    d is alone, and a layout repeated within d changes nothing."""
    rows = [
        ("a", "scene", "a.png", "H1"),
        ("a", "room", "a1.png", "H2"),
        ("b", "scene", "b.png", "H2"),  # identical to a's room
        ("b", "room", "b1.png", "H3"),
        ("c", "room", "c1.png", "H3"),  # identical to b's room
        ("d", "scene", "d.png", "H4"),
        ("d", "room", "d1.png", "H4"),
        ("e", "room", "e1.png", None),  # unreadable: no hash, its scene's group only
    ]
    text = "".join(f"{scene},{kind},{i},{name},false\n" for i, (scene, kind, name, _) in enumerate(rows))
    records = read_manifest(_write(tmp_path, MANIFEST_HEADER + text)).records
    groups = group_layouts(records, [h for *_, h in rows])
    assert groups.tolist() == [0, 0, 0, 0, 0, 1, 1, 2]  # numbered by smallest scene: a, d, e
    reordered = read_manifest(_write(tmp_path, MANIFEST_HEADER + "".join(reversed(text.splitlines(True))), "r.csv"))
    by_name = dict(
        zip((r.path.name for r in reordered.records), group_layouts(reordered.records, [h for *_, h in reversed(rows)]))
    )
    assert [by_name[r.path.name] for r in records] == groups.tolist()
    # without the hashes the split would see 5 groups: a, b and c could land on three sides
    assert group_layouts(records, [None] * len(records)).tolist() == [0, 0, 1, 1, 2, 3, 3, 4]


def test_identical_layouts_under_other_scenes_never_straddle_the_split(tmp_path):
    """The leak a scene-only split lets through: 20 layouts copied under new scene ids. Grouped by
    scene alone, some copies land on another side than their originals; grouped with their hashes
    (as the cache gives them) none do, for any seed."""
    rows = _houses(tmp_path, houses=60)
    originals = rows[1::3][:20]  # 20 layouts of different houses (rows 1, 4, 7, ...)
    copies = [f"copy{k:02d},room,1,{line.split(',')[3]},false\n" for k, line in enumerate(originals)]
    # a copy is another image file with the same content: give it its own path
    copies = [line.replace(".png", f"_copy{k}.png") for k, line in enumerate(copies)]
    records = read_manifest(_write(tmp_path, MANIFEST_HEADER + "".join(rows + copies))).records
    content = {r.path.name: r.path.name.split("_copy")[0].removesuffix(".png") for r in records}
    hashes = [content[r.path.name] for r in records]  # the copy has its original's hash
    straddling = {"by scene": 0, "by group": 0}
    for seed in range(10):
        for name, given in (("by scene", None), ("by group", hashes)):
            split = split_records(records, given, 0.1, 0.2, seed)
            side_of = {}
            for record, side in zip(records, split.sides):
                side_of.setdefault(content[record.path.name], set()).add(int(side))
            straddling[name] += sum(len(s) > 1 for s in side_of.values())
    assert straddling["by scene"] > 0  # the case fools a split by scene
    assert straddling["by group"] == 0


def test_a_few_groups_still_fill_every_side_and_too_few_are_named(tmp_path):
    # one big house and two one-layout houses: each side gets one, whatever the seed
    rows = [f"big,room,{i},big{i}.png,false\n" for i in range(30)] + [
        "s1,room,1,a.png,false\n",
        "s2,room,1,b.png,false\n",
    ]
    path = _write(tmp_path, MANIFEST_HEADER + "".join(rows))
    records = read_manifest(path).records
    for seed in range(10):
        assert all(split_records(records, None, 0.1, 0.2, seed).side(side) for side in SIDES), seed
    # the two small houses hold the same layout: two groups left, too few, and the message says why
    hashes = [f"big{i}" for i in range(30)] + ["same", "same"]
    with pytest.raises(
        ManifestError, match=r"layouts.csv: the 32 layouts form 2 group\(s\) .*identical layout.*at least 3"
    ):
        split_records(records, hashes, 0.1, 0.2, 42, source=path)


def test_sides_stay_within_a_group_of_their_targets():
    """Random group sizes and seeds: every group on one side, no side empty, no side past its
    target by a whole group, none further from it than twice the largest group."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        count = int(rng.integers(3, 40))
        sizes = rng.integers(1, 8, size=count) ** rng.integers(1, 3)  # now and then a few big groups
        groups = np.repeat(np.arange(count), sizes)
        sides = assign_sides(groups, 0.1, 0.2, trial)
        assert len({(g, s) for g, s in zip(groups.tolist(), sides.tolist())}) == count, trial  # one side per group
        counts = np.bincount(sides, minlength=3)
        targets = side_targets(len(groups), 0.1, 0.2)
        assert (counts > 0).all(), trial
        assert (counts - targets < sizes.max()).all() and (targets - counts < 2 * sizes.max()).all(), trial


def test_split_figures_count_identical_layouts_and_their_sides():
    hashes = ["a", "a", "a", "b", "b", "c", "d"]
    groups = np.array([0, 0, 0, 1, 1, 2, 3])
    sides = np.array([0, 0, 0, 2, 2, 1, 0])
    figures = split_figures(hashes, groups, sides, 0.1, 0.2, 42)
    assert (figures.identical_layouts, figures.layouts_with_twin, figures.identical_sets) == (3, 5, 2)
    assert figures.duplicate_rate == pytest.approx(5 / 7) and figures.identical_across_sides == 0
    assert figures.layouts == {"train": 4, "val": 1, "test": 2} and figures.groups == 4 and figures.largest_group == 3
    leaky = split_figures(hashes, np.arange(7), np.array([0, 1, 0, 2, 2, 1, 0]), 0.1, 0.2, 42)
    assert leaky.identical_across_sides == 1  # "a" on train and val
    assert "identical layouts on two sides: 1" in "\n".join(leaky.lines())


def _palette_png(path, seed, size=16):
    rng = np.random.default_rng(seed)
    Image.fromarray(PALETTE[rng.integers(0, 10, size=(size, size))]).save(path)


def test_copies_under_new_scenes_land_with_their_originals_and_are_counted(tmp_path):
    """The held-out case: 60 houses, then 20 of their layouts copied (other files, same pixels)
    under new scene ids. Through the cache: every copy shares its original's hash and group,
    no hash and no group is on two sides, and the log and split_summary give the figures."""
    folder = tmp_path / "data"
    folder.mkdir()
    lines = _houses(folder, houses=60)
    for seed, line in enumerate(lines):
        _palette_png(folder / line.split(",")[3], seed)
    originals = [line.split(",")[3] for line in lines[1::3][:20]]
    for k, name in enumerate(originals):
        shutil.copy(folder / name, folder / f"copy{k}.png")
    copies = [f"copy{k:02d},room,1,copy{k}.png,false\n" for k in range(20)]
    path = _write(folder, MANIFEST_HEADER + "".join(lines + copies))
    cfg = small_config(V1, tmp_path / "out", **{"data.manifest": str(path), "data.resolution": 16})
    log = []
    data = load_data(cfg, log.append)

    layouts = len(lines) + 20
    assert sum(len(side) for _, side in data.sides()) == layouts
    row = {r.path.name: i for i, r in enumerate(data.cache.records)}
    for k, name in enumerate(originals):
        original, copy = row[name], row[f"copy{k}.png"]
        assert data.cache.hashes[original] == data.cache.hashes[copy]
        assert data.cache.groups[original] == data.cache.groups[copy]
    side_of_hash, side_of_group = {}, {}
    for side, members in data.sides():
        for h, g in zip(members.hashes, members.groups):
            side_of_hash.setdefault(h, set()).add(side)
            side_of_group.setdefault(int(g), set()).add(side)
    assert all(len(s) == 1 for s in side_of_hash.values()) and all(len(s) == 1 for s in side_of_group.values())
    assert len(data.test) > len(data.val) > 0

    figures = data.split_summary()
    assert (figures["identical_layouts"], figures["layouts_with_twin"], figures["identical_sets"]) == (20, 40, 20)
    assert figures["duplicate_rate"] == pytest.approx(40 / layouts) and figures["identical_across_sides"] == 0
    assert figures["groups"] == 60 and sum(figures["layouts"].values()) == layouts
    assert figures["layouts"] == {side: len(members) for side, members in data.sides()}
    summary = data.summary()
    assert f"20 identical layouts (copies of another layout; 40 layouts, {40 / layouts:.1%}" in summary
    assert "identical layouts on two sides: 0" in summary
    # split.csv: one row per layout, its side, group and hash, as the manifest spells its path
    table = list(csv.DictReader(io.StringIO(data.split_csv())))
    assert list(table[0]) == ["layout_path", "scene_id", "type", "split", "group", "hash"]
    assert sorted(r["layout_path"] for r in table) == sorted(line.split(",")[3] for line in lines + copies)
    assert {r["split"] for r in table} == set(SIDES)
    by_hash = {}
    for r in table:
        by_hash.setdefault(r["hash"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_hash.values())
