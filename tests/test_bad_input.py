"""Fault injection for the data: each bad manifest row or layout file named in README.md
("Bad input") is either handled as documented there or stops with an error naming the row and
the file; with ``data.skip_broken`` the broken rows are left out and listed in the log instead.

Cases already covered elsewhere: the is_empty spellings, an unknown is_empty, a missing column,
an unknown type, an empty or header-only manifest, duplicate rows (tests/test_manifest.py);
a missing or not-an-image file, grayscale and palette-mode PNGs, another square size
(tests/test_cache.py).
"""

import io
import json
import re

import numpy as np
import pytest
from helpers import MANIFEST_HEADER, TINY_MODEL, V1, run_dir, small_config
from PIL import Image

from imginav_core import train
from imginav_core.data.cache import build_cache, load_layout
from imginav_core.data.manifest import read_manifest
from imginav_core.errors import LayoutReadError, ManifestError
from imginav_core.palette import BACKGROUND, PALETTE, WALL

pytestmark = pytest.mark.usefixtures("one_thread")


def _palette_image(size=(16, 16), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return PALETTE[rng.integers(0, 10, size=(size[1], size[0]))]


def _png_bytes(array, mode=None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


# name -> file content, for the files a broken render or copy leaves
BROKEN_FILES = {
    "zero_bytes.png": (b"", r"cannot decode the image: the file is empty \(0 bytes\)"),
    "truncated.png": (_png_bytes(_palette_image((64, 64)))[:300], r"cannot decode the image \(OSError: .*truncated"),
    "text.png": (b"scene_id,type\n", r"cannot decode the image: not an image file"),
    "photo.png": (None, r"a JPEG file; layouts must be PNG"),  # written below: a JPEG under a .png name
    "deep.png": (_png_bytes(np.full((16, 16), 240 * 257, dtype=np.uint16)), r"PNG mode I;16; expected an 8-bit"),
    "wide.png": (_png_bytes(_palette_image((16, 8))), r"16 x 8 pixels; expected a square layout"),
}


def _write_broken(folder, name):
    content, _ = BROKEN_FILES[name]
    if content is None:
        Image.fromarray(_palette_image()).save(folder / name, format="JPEG")
    else:
        (folder / name).write_bytes(content)


@pytest.mark.parametrize("name", BROKEN_FILES)
def test_a_broken_layout_file_stops_the_cache_with_its_line_and_file(name, tmp_path):
    _write_broken(tmp_path, name)
    Image.fromarray(_palette_image()).save(tmp_path / "ok.png")
    manifest = tmp_path / "layouts.csv"
    manifest.write_text(MANIFEST_HEADER + f"s,room,1,ok.png,false\ns,room,2,{name},false\n")
    records = read_manifest(manifest).records
    _, message = BROKEN_FILES[name]
    with pytest.raises(LayoutReadError, match=rf"layouts.csv, line 3: .*{name}: {message}.*data.skip_broken"):
        build_cache(records, 16, tmp_path / "cache", manifest, workers=1, log=lambda _: None)
    assert not any((p / "meta.json").exists() for p in (tmp_path / "cache").iterdir())


def test_rgba_loses_its_alpha_and_keeps_its_colours(tmp_path):
    rgb = _palette_image()
    alpha = np.full(rgb.shape[:2] + (1,), 128, dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA").save(tmp_path / "rgba.png")
    decoded, class_map, unknown = load_layout(tmp_path / "rgba.png", 16)
    assert np.array_equal(decoded, rgb) and unknown == 0


def test_off_palette_pixels_are_kept_ignored_and_reported_per_image(tmp_path):
    clean, smudged = _palette_image(seed=1), _palette_image(seed=2)
    smudged[:4, :] = (10, 20, 30)  # a quarter of the image in no class colour
    Image.fromarray(clean).save(tmp_path / "clean.png")
    Image.fromarray(smudged).save(tmp_path / "smudged.png")
    manifest = tmp_path / "layouts.csv"
    manifest.write_text(MANIFEST_HEADER + "s,room,1,clean.png,false\ns,room,2,smudged.png,false\n")
    cache = build_cache(
        read_manifest(manifest).records, 16, tmp_path / "cache", manifest, workers=1, log=lambda _: None
    )
    assert len(cache) == 2 and cache.off_palette.tolist() == [0.0, 0.25]
    assert json.loads((cache.folder / "meta.json").read_text())["off_palette"] == [0.0, 0.25]
    assert (
        cache.folder / "off_palette.csv"
    ).read_text() == f"layout_path,off_palette_share\n{tmp_path / 'smudged.png'},0.250000\n"
    assert "1 of 2 layouts have pixels outside the palette" in cache.off_palette_summary()
    assert "line 3 smudged.png (25.00%)" in cache.off_palette_summary()


@pytest.mark.parametrize(
    "row,message",
    [
        ("s,room,2,b.png\n", r"line 3: expected 5 fields, found a row of a different length"),
        ("s,room,2,b.png,false,extra\n", r"line 3: expected 5 fields"),
        ("s,room,2,,false\n", r"line 3: layout_path is empty"),
        ("s,kitchen,2,b.png,false\n", r"line 3: type = 'kitchen'; expected 'room' or 'scene'"),
        ("s,room,2,b.png,yes\n", r"line 3: is_empty = 'yes'; expected true/false/True/False/1/0"),
        ("s,scene,1,a.png,false\n", r"line 3: a.png is also listed on line 2 with a different type"),
    ],
    ids=["short row", "long row", "no layout_path", "unknown type", "unknown is_empty", "conflicting duplicate"],
)
def test_a_broken_manifest_row_stops_with_its_line_or_is_skipped_on_request(row, message, tmp_path):
    path = tmp_path / "layouts.csv"
    path.write_text(MANIFEST_HEADER + "s,room,1,a.png,false\n" + row + "s,room,3,c.png,false\n")
    with pytest.raises(ManifestError, match=rf"layouts.csv, {message}.*set data.skip_broken: true"):
        read_manifest(path)
    manifest = read_manifest(path, skip_broken=True)
    assert [r.room_id for r in manifest.records] == ["1", "3"]
    assert len(manifest.skipped) == 1 and "line 3" in manifest.skipped[0]
    assert "1 broken rows skipped" in manifest.summary()


def test_a_manifest_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "layouts.csv"
    path.write_bytes(MANIFEST_HEADER.encode() + "s,room,1,caf\xe9.png,false\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"layouts.csv: not a UTF-8 CSV file"):
        read_manifest(path)


def test_a_manifest_with_only_broken_rows_says_so_even_when_skipping(tmp_path):
    path = tmp_path / "layouts.csv"
    path.write_text(MANIFEST_HEADER + "s,kitchen,1,a.png,false\n")
    with pytest.raises(ManifestError, match=r"no layouts left .* skipping 1 broken rows, first: .*line 2: type"):
        read_manifest(path, skip_broken=True)


def test_skip_broken_trains_on_the_rest_and_the_log_lists_every_skipped_row(tmp_path):
    """The whole path a user runs: every kind of broken row in one manifest, and the training log."""
    data = tmp_path / "data"
    data.mkdir()
    good = [f"g{i}.png" for i in range(8)]
    for i, name in enumerate(good):
        Image.fromarray(_palette_image(seed=i)).save(data / name)
    for name in BROKEN_FILES:
        _write_broken(data, name)
    smudged = _palette_image(seed=99)
    smudged[0, :] = (1, 2, 3)  # one row of 16: 6.25% off the palette
    Image.fromarray(smudged).save(data / "smudged.png")
    # a house (scene_id) per row: the split keeps houses whole, and needs two of them
    rows = [f"s{i},room,{i},{name},false" for i, name in enumerate(good)]  # lines 2-9
    rows += [f"b{i},scene,scene,{name},false" for i, name in enumerate(BROKEN_FILES)]  # lines 10-15
    rows += [
        "x16,room,90,missing.png,false",  # 16
        "x17,kitchen,91,g0.png,false",  # 17: unknown type
        "x18,room,92,g1.png,maybe",  # 18: unknown is_empty
        "s0,room,0,g0.png,false",  # 19: the same row as line 2
        "x20,scene,scene,smudged.png,False",  # 20
        "x21,room,93,empty_room.png,1",
    ]  # 21: empty, dropped before any decoding
    manifest = data / "layouts.csv"
    manifest.write_text(MANIFEST_HEADER + "\n".join(rows) + "\n")
    settings = {**TINY_MODEL, "data.manifest": str(manifest), "data.resolution": 16}

    with pytest.raises(ManifestError, match=r"line 17: type = 'kitchen'"):  # off by default
        train(small_config(V1, tmp_path / "out", **settings), log=lambda _: None)

    cfg = small_config(V1, tmp_path / "out", **settings, **{"data.skip_broken": True})
    log = []
    train(cfg, log=log.append)
    text = "\n".join(log)
    assert "20 rows, 16 layouts kept" in text
    assert "1 empty dropped, 1 duplicate rows dropped (lines 19), 2 broken rows skipped" in text
    assert "9 broken rows skipped (data.skip_broken: true):" in text
    expected = [(17, "type = 'kitchen'"), (18, "is_empty = 'maybe'")]  # the manifest's, then the images'
    expected += [(10 + i, f"{name}: {why}") for i, (name, (_, why)) in enumerate(BROKEN_FILES.items())]
    expected += [(16, "missing.png: image file not found")]
    summary = next(message for message in log if "broken rows skipped (data.skip_broken" in message)
    skipped = [line for line in summary.splitlines() if line.startswith("  ")]
    assert len(skipped) == 9
    for (line, why), message in zip(expected, skipped):
        assert f"layouts.csv, line {line}: " in message
        assert re.search(why, message), (why, message)
    assert "1 of 9 layouts have pixels outside the palette" in text and "smudged.png (6.25%)" in text
    assert (run_dir(cfg) / "last.pt").is_file()


def test_grey_and_palette_pngs_decode_to_the_same_classes_as_rgb(tmp_path):
    grey = np.full((8, 8), 240, dtype=np.uint8)
    grey[:, :2] = 200
    Image.fromarray(grey, mode="L").convert("LA").save(tmp_path / "grey_alpha.png")
    _, class_map, unknown = load_layout(tmp_path / "grey_alpha.png", 8)
    assert unknown == 0 and set(np.unique(class_map)) == {WALL, BACKGROUND}


@pytest.mark.parametrize(
    "houses,found",
    [(["a", "a", "b", "b"], 2), (["a", "b", "c", "d"], 1)],
    ids=["two scenes", "four scenes, one identical layout in all"],
)
def test_too_few_groups_to_split_name_the_manifest(tmp_path, houses, found):
    """A split into train, validation and test needs three groups; identical layouts under
    different scenes make one group of them (the second case: every scene holds the same image)."""
    for i in range(len(houses)):
        Image.fromarray(_palette_image(seed=i if found > 1 else 0)).save(tmp_path / f"{i}.png")
    manifest = tmp_path / "layouts.csv"
    manifest.write_text(MANIFEST_HEADER + "".join(f"{h},room,{i},{i}.png,false\n" for i, h in enumerate(houses)))
    cfg = small_config(V1, tmp_path / "out", **TINY_MODEL, **{"data.manifest": str(manifest), "data.resolution": 16})
    with pytest.raises(ManifestError, match=rf"layouts.csv: the 4 layouts form {found} group\(s\).*at least 3 groups"):
        train(cfg, log=lambda _: None)
    assert not run_dir(cfg).exists()
