import numpy as np
import pytest
from PIL import Image

from imginav_core.data.cache import build_cache, load_layout
from imginav_core.data.manifest import read_manifest
from imginav_core.errors import LayoutReadError
from imginav_core.palette import PALETTE, rgb_to_class


def test_cache_holds_decoded_layouts_and_later_reads_need_no_png(synthetic_manifest, tmp_path):
    records = read_manifest(synthetic_manifest).records
    cache = build_cache(records, 64, tmp_path / "cache", synthetic_manifest, workers=2, log=lambda _: None)
    rgb, class_map = cache.arrays()
    assert rgb.shape == (len(records), 64, 64, 3) and class_map.shape == (len(records), 64, 64)
    for i in (0, len(records) - 1):
        expected_rgb, expected_map, _ = load_layout(records[i].path, 64)
        assert np.array_equal(rgb[i], expected_rgb) and np.array_equal(class_map[i], expected_map)
    assert cache.labels.tolist() == [r.label for r in records]
    # A second build with the same manifest and resolution reads the cache, not the PNGs.
    moved = synthetic_manifest.parent / "images_moved"
    (synthetic_manifest.parent / "images").rename(moved)
    try:
        again = build_cache(records, 64, tmp_path / "cache", synthetic_manifest, log=lambda _: None)
        assert again.folder == cache.folder
        assert np.array_equal(again.arrays()[1], class_map)
        with pytest.raises(LayoutReadError, match="not found"):  # another resolution is another cache
            build_cache(records, 32, tmp_path / "cache", synthetic_manifest, workers=1, log=lambda _: None)
    finally:
        moved.rename(synthetic_manifest.parent / "images")


def test_other_sizes_are_resized_nearest_and_stay_in_the_palette(tmp_path):
    rng = np.random.default_rng(0)
    big = PALETTE[rng.integers(0, 10, size=(100, 100))]
    Image.fromarray(big).save(tmp_path / "big.png")
    rgb, class_map, unknown = load_layout(tmp_path / "big.png", 64)
    assert rgb.shape == (64, 64, 3) and unknown == 0
    assert set(np.unique(class_map)) <= set(range(10))


def test_grayscale_and_palette_mode_images_are_converted(tmp_path):
    grey = np.full((32, 32), 240, dtype=np.uint8)
    grey[:, :4] = 200
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    _, class_map, unknown = load_layout(tmp_path / "grey.png", 32)
    assert unknown == 0 and set(np.unique(class_map)) == {8, 9}  # wall, background
    rgb = PALETTE[np.arange(32 * 32).reshape(32, 32) % 10]
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=10).save(tmp_path / "p.png")
    _, class_map, unknown = load_layout(tmp_path / "p.png", 32)
    assert unknown == 0 and np.array_equal(class_map, rgb_to_class(rgb)[0])


def test_unreadable_image_names_the_manifest_line_and_leaves_nothing(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(np.full((8, 8, 3), 240, dtype=np.uint8)).save(folder / "ok.png")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "layouts.csv").write_text(
        "scene_id,type,room_id,layout_path,is_empty\ns,room,1,ok.png,false\ns,room,2,broken.png,false\n"
        "s,room,3,missing.png,false\n"
    )
    records = read_manifest(folder / "layouts.csv").records
    with pytest.raises(LayoutReadError, match=r"layouts.csv, line 3: .*broken.png: cannot decode"):
        build_cache(records, 8, tmp_path / "cache", folder / "layouts.csv", workers=1, log=lambda _: None)
    assert not any(p.name.endswith(".partial") or (p / "meta.json").exists() for p in (tmp_path / "cache").iterdir())
    cache = build_cache(
        records, 8, tmp_path / "cache", folder / "layouts.csv", skip_broken=True, workers=1, log=lambda _: None
    )
    assert [r.path.name for r in cache.records] == ["ok.png"]
    assert len(cache.skipped) == 2 and "line 4" in cache.skipped[1] and "not found" in cache.skipped[1]
