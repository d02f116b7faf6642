import numpy as np
from PIL import Image

from imginav_core.data.cache import load_layout
from imginav_core.data.manifest import read_manifest
from imginav_core.data.synthetic import generate_layouts, synthetic_layout
from imginav_core.palette import BACKGROUND, WALL, rgb_to_class


def test_generated_set_round_trips_through_the_reader_with_every_pixel_in_the_palette(synthetic_manifest):
    every = read_manifest(synthetic_manifest, drop_empty=False)
    assert every.rows == 40
    kinds = {(r.type, r.is_empty) for r in every.records}
    assert ("room", False) in kinds and ("scene", False) in kinds
    assert any(r.is_empty for r in every.records)
    for record in every.records:
        rgb, class_map, unknown = load_layout(record.path, 64)
        assert unknown == 0, record.path
        classes = set(np.unique(class_map).tolist())
        assert WALL in classes and BACKGROUND in classes
        # empty layouts hold only walls and background, the others some furniture
        assert (classes <= {WALL, BACKGROUND}) == record.is_empty, record.path


def test_layouts_look_like_the_real_data():
    backgrounds, room_fill, scene_fill = [], [], []
    for i in range(60):
        layout = synthetic_layout(i, 128, seed=1)
        rgb = np.asarray(layout.image)
        class_map, _ = rgb_to_class(rgb)
        backgrounds.append((class_map == BACKGROUND).mean())
        rows, cols = np.nonzero(class_map != BACKGROUND)
        extent = max(np.ptp(rows), np.ptp(cols)) / 128
        (scene_fill if layout.type == "scene" else room_fill).append(extent)
    assert 0.6 < np.mean(backgrounds) < 0.98  # mostly light background
    assert np.mean(room_fill) > np.mean(scene_fill)  # one room fills more of the canvas than a flat


def test_deterministic_per_seed_and_index_at_any_resolution(tmp_path):
    a = np.asarray(synthetic_layout(5, 96, seed=2).image)
    b = np.asarray(synthetic_layout(5, 96, seed=2).image)
    c = np.asarray(synthetic_layout(5, 96, seed=3).image)
    assert a.shape == (96, 96, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    small = generate_layouts(tmp_path / "small", samples=5, resolution=48, seed=2)
    large = generate_layouts(tmp_path / "large", samples=8, resolution=48, seed=2)
    for name in sorted(p.name for p in (small.parent / "images").iterdir()):
        assert np.array_equal(
            np.asarray(Image.open(small.parent / "images" / name)),
            np.asarray(Image.open(large.parent / "images" / name)),
        )


def test_an_existing_set_is_reused(tmp_path):
    manifest = generate_layouts(tmp_path / "set", samples=3, resolution=32)
    stamp = manifest.stat().st_mtime_ns
    assert generate_layouts(tmp_path / "set", samples=3, resolution=32) == manifest
    assert manifest.stat().st_mtime_ns == stamp
