"""The synthetic set, the demo's dataset, is built like the real one: apartments and their rooms
under one scene id, rooms that are crops of their scene, about 44 % empty layouts, about 10 %
exact copies under other scene ids, thin walls, class shares near the real ones."""

from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from imginav_core.data.cache import load_layout
from imginav_core.data.manifest import read_manifest
from imginav_core.data.synthetic import (
    SetFigures,
    SyntheticLayout,
    apartment_layouts,
    apartment_plan,
    coverage,
    generate_layouts,
    stroke_width,
    synthetic_layout,
    synthetic_layouts,
)
from imginav_core.palette import BACKGROUND, CLASS_NAMES, WALL, class_map_hash, rgb_to_class

FURNITURE = [i for i in range(len(CLASS_NAMES)) if i not in (WALL, BACKGROUND)]


@pytest.fixture(scope="module")
def layouts() -> list[SyntheticLayout]:
    """1,200 layouts at 32 px (about 160 apartments): enough for the shares to settle."""
    return list(synthetic_layouts(1200, 32, seed=5))


@pytest.fixture(scope="module")
def figures(layouts) -> SetFigures:
    return SetFigures.of(layouts)


def test_generated_set_round_trips_through_the_reader_with_every_pixel_in_the_palette(synthetic_manifest):
    every = read_manifest(synthetic_manifest, drop_empty=False)
    assert every.rows == 40
    kinds = {(r.type, r.is_empty) for r in every.records}
    assert ("room", False) in kinds and ("scene", False) in kinds and ("room", True) in kinds
    for record in every.records:
        rgb, class_map, unknown = load_layout(record.path, 64)
        assert unknown == 0, record.path
        classes = set(np.unique(class_map).tolist())
        assert WALL in classes and BACKGROUND in classes
        # empty layouts hold only walls and background, the others some furniture
        assert (classes <= {WALL, BACKGROUND}) == record.is_empty, record.path


def test_every_pixel_is_a_palette_colour_at_any_resolution():
    apartment = apartment_plan(2, seed=1)
    for resolution in (16, 45, 128, 512):
        for layout in apartment_layouts(apartment, "s", resolution):
            _, unknown = rgb_to_class(np.asarray(layout.image))
            assert unknown == 0 and layout.class_map.shape == (resolution, resolution)


def test_rooms_share_their_scene_id_with_the_scene_they_come_from(tmp_path):
    records = read_manifest(generate_layouts(tmp_path / "set", 300, 32, seed=4), drop_empty=False).records
    scenes = defaultdict(list)
    rooms = defaultdict(list)
    for r in records:
        (scenes if r.type == "scene" else rooms)[r.scene_id].append(r)
    assert all(len(s) == 1 and s[0].room_id == "scene" for s in scenes.values())  # one scene layout per scene id
    assert set(rooms) <= set(scenes)  # every room's scene is listed, under the same scene id
    # the real set's rooms per scene (43,208 / 6,807 = 6.3); each scene listed before its rooms
    per_scene = [len(rooms[s]) for s in scenes]
    assert min(per_scene[:-1]) >= 3 and 4.5 < np.mean(per_scene) < 8.5
    first = {}
    for r in records:
        first.setdefault(r.scene_id, r.type)
    assert set(first.values()) == {"scene"}
    assert all(len({r.room_id for r in rooms[s]}) == len(rooms[s]) for s in rooms)  # room ids unique in a scene


def test_shares_of_rooms_empty_layouts_and_duplicates_are_near_the_real_set(layouts, figures):
    # real: 86 % rooms, 44 % empty, 10 % exact duplicates
    assert 0.8 < figures.room_share < 0.92
    assert 0.34 < figures.empty_share < 0.54
    assert 0.05 < figures.duplicate_share < 0.16
    for layout in layouts:  # is_empty says what the pixels show
        furnished = np.isin(layout.class_map, FURNITURE).any()
        assert layout.is_empty != furnished
    # empty layouts come both as unfurnished rooms of furnished apartments and as whole empty apartments
    furnished_scenes = {x.scene_id for x in layouts if x.type == "scene" and not x.is_empty}
    assert any(x.is_empty and x.scene_id in furnished_scenes for x in layouts)
    assert any(x.is_empty and x.type == "scene" for x in layouts)


def test_duplicates_are_identical_layouts_under_other_scene_ids(layouts):
    groups = defaultdict(list)
    for layout in layouts:
        groups[class_map_hash(layout.class_map)].append(layout)
    repeated = [g for g in groups.values() if len(g) > 1]
    # whole apartments listed again: scene layouts among the copies, each under another scene id
    copied_scenes = [g for g in repeated if g[0].type == "scene"]
    assert len(copied_scenes) >= 5
    for group in copied_scenes:
        assert len({x.scene_id for x in group}) == len(group)
        copy = group[1]
        original_rooms = [x for x in layouts if x.scene_id == group[0].scene_id and x.type == "room"]
        copied_rooms = [x for x in layouts if x.scene_id == copy.scene_id and x.type == "room"]
        for a, b in zip(original_rooms, copied_rooms):  # the copy's rooms too, in the same order
            assert np.array_equal(a.class_map, b.class_map)


def test_class_shares_and_walls_look_like_the_real_data(figures):
    scene = dict(zip(CLASS_NAMES, figures.scene_class_shares))
    # real scene layouts: background 0.79, wall 0.10, bed 0.041, cabinet 0.030, sofa 0.014, chair 0.010,
    # table 0.009, lighting 0.003, stool 0.001, others below 0.001
    assert 0.65 < scene["background"] < 0.9 and 0.03 < scene["wall"] < 0.2
    furniture = {name: share for name, share in scene.items() if name not in ("wall", "background")}
    assert max(furniture, key=furniture.get) == "bed"
    assert 0.02 < furniture["bed"] < 0.07 and 0.015 < furniture["cabinet/shelf/desk"] < 0.05
    for name in ("chair", "table", "sofa"):
        assert 0.004 < furniture[name] < 0.03, name
    assert 0.0003 < furniture["lighting"] < 0.01 and 0.0001 < furniture["pier/stool"] < 0.005
    assert furniture["others"] < 0.002
    assert 0.85 < figures.mean_intensity < 0.91  # real: 0.88
    assert 0.5 < figures.scene_coverage < 0.8  # real: 0.64


def test_walls_are_thin_strokes_at_any_resolution():
    apartment = apartment_plan(0, seed=0)
    for resolution, expected in ((512, 6), (256, 3), (64, 1), (32, 1)):
        scene = next(apartment_layouts(apartment, "s", resolution))
        assert stroke_width(scene.class_map) == expected, resolution


def test_a_room_layout_is_its_scenes_crop_scaled_to_the_frame():
    """Shrink each furnished room's layout onto the part of its scene layout it shows: the
    furniture lands on the same furniture. Rooms drawn independently of the scene would not."""
    agreement, elsewhere = [], []
    for number in range(6):
        scene, *rooms = apartment_layouts(apartment_plan(number, seed=2), "s", 256)
        for room in rooms:
            if room.is_empty:
                continue
            rows, cols = np.nonzero(room.class_map != BACKGROUND)
            own = room.class_map[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            x0, y0, x1, y1 = room.scene_box
            assert (x1 - x0) * (y1 - y0) < own.size  # the room is drawn larger in its own layout
            shrunk = np.asarray(Image.fromarray(own).resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST))
            agreement.append(_furniture_overlap(shrunk, scene.class_map[y0:y1, x0:x1]))
            other = next(r for r in rooms if r.room_id != room.room_id and not r.is_empty) if len(rooms) > 1 else None
            if other is not None:  # the same comparison against another room's region: the control
                ox0, oy0, ox1, oy1 = other.scene_box
                moved = np.asarray(Image.fromarray(own).resize((ox1 - ox0, oy1 - oy0), Image.Resampling.NEAREST))
                elsewhere.append(_furniture_overlap(moved, scene.class_map[oy0:oy1, ox0:ox1]))
    assert len(agreement) >= 10 and min(agreement) > 0.7
    assert np.mean(elsewhere) < 0.3


def _furniture_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Pixels where both show the same furniture class, over pixels where either shows furniture."""
    either = np.isin(a, FURNITURE) | np.isin(b, FURNITURE)
    return float(((a == b) & either).sum() / max(either.sum(), 1))


def test_the_figures_measure_what_they_say():
    frame = np.full((40, 40), BACKGROUND, np.uint8)
    frame[10:30, 5:35] = WALL
    frame[13:27, 8:32] = BACKGROUND  # a room outlined by a stroke 3 px thick, 20 x 30 px outside
    frame[13:27, 19:22] = WALL  # a partition, also 3 px, meeting the outline at T junctions
    assert stroke_width(frame) == 3
    assert coverage(frame) == pytest.approx(20 * 30 / 1600)
    slab = np.full((40, 40), BACKGROUND, np.uint8)
    slab[0:20, 0:20] = WALL  # a solid block is not a thin stroke
    assert stroke_width(slab) == 20
    furnished = frame.copy()
    furnished[15:20, 10:15] = 0  # a bed
    layouts = [
        SyntheticLayout("a", "scene", "scene", False, furnished, 0),
        SyntheticLayout("a", "room", "1", True, frame, 0),
        SyntheticLayout("b", "scene", "scene", False, furnished.copy(), 0),  # a copy under another scene
        SyntheticLayout("b", "room", "1", True, frame.copy(), 0),
        SyntheticLayout("b", "room", "2", True, slab, 0),
    ]
    figures = SetFigures.of(layouts)
    assert figures.rooms_per_scene == 1.5 and figures.room_share == 0.6
    assert figures.empty_share == 0.6 and figures.duplicate_share == 0.4
    assert figures.scene_class_shares[0] == pytest.approx(25 / 1600)
    assert figures.wall_px == 3


def test_deterministic_per_seed_and_a_smaller_set_is_the_start_of_a_larger_one(tmp_path):
    a = generate_layouts(tmp_path / "a", samples=30, resolution=48, seed=2)
    b = generate_layouts(tmp_path / "b", samples=30, resolution=48, seed=2)
    c = generate_layouts(tmp_path / "c", samples=30, resolution=48, seed=3)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    names = sorted(p.name for p in (a.parent / "images").iterdir())
    assert names == sorted(p.name for p in (b.parent / "images").iterdir())
    assert all((a.parent / "images" / n).read_bytes() == (b.parent / "images" / n).read_bytes() for n in names)
    small = generate_layouts(tmp_path / "small", samples=9, resolution=48, seed=2)
    assert small.read_text().splitlines() == a.read_text().splitlines()[:10]
    for name in sorted(p.name for p in (small.parent / "images").iterdir()):
        assert (small.parent / "images" / name).read_bytes() == (a.parent / "images" / name).read_bytes()
    assert np.array_equal(
        synthetic_layout(12, 48, seed=2).class_map, load_layout(a.parent / "images" / names[12], 48)[1]
    )


def test_an_existing_set_is_reused(tmp_path):
    manifest = generate_layouts(tmp_path / "set", samples=3, resolution=32)
    stamp = manifest.stat().st_mtime_ns
    assert generate_layouts(tmp_path / "set", samples=3, resolution=32) == manifest
    assert manifest.stat().st_mtime_ns == stamp
