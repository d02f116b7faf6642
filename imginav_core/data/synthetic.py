"""Synthetic top-down layouts: the embedded default dataset for anyone without the real renders.

The set is built like the real one: apartments (``type`` scene, ``room_id`` ``scene``) of several
rooms, and each room again as a layout of its own (``type`` room, its own ``room_id``, the
apartment's ``scene_id``), drawn as the room's crop of its apartment: the same walls, doors and
furniture, framed on the room and scaled to fill much of the canvas. So the demo meets what
matters on the real data: a split must keep a scene with its rooms, many layouts are empty, and
some are exact copies under other scene ids.

What is drawn: a light-grey canvas; 200-grey walls, a stroke of about ``resolution * 5.5 / 512``
pixels (6 px at 512, 1 px from 64 down) in scene and room layouts alike, with door gaps;
furniture as filled rectangles and rounded blobs in the class colours (beds with night-stands
and wardrobes, sofas with coffee tables and TV cabinets, tables with chairs around them, desks,
lamps). Drawing is aliased, so every pixel is a palette colour. Apartments are cut
into 3-12 rooms (about 6.3 on average, as in the real set); the smaller rooms (kitchens,
bathrooms, halls, storage, balconies) and 8 % of the apartments are left without furniture,
which makes those layouts empty (walls and background only; ``is_empty`` is read off the
pixels). One apartment in 10 is an exact copy of an earlier one (its scene and room layouts
bit-identical) under a new scene id, as the real set re-lists identical layouts under other
scenes.

Measured with ``python -m imginav_core.data.synthetic --samples 2000 --resolution R`` (seed 0:
274 apartments drawn in memory, ``SetFigures``), against the real set's statistics and a sample
of real 512 px scene layouts. Class shares are pixel shares over the scene layouts; coverage is
the bounding box of the non-background pixels over the frame, scene layouts.

==========================  ===========  =========  ========
figure                      real         512 px     64 px
==========================  ===========  =========  ========
rooms per scene             6.35         6.30       6.30
room share                  0.864        0.863      0.863
empty share                 0.442        0.432      0.432
exact-duplicate share       0.103        0.100      0.100
scene coverage              0.64         0.61       0.62
wall stroke (px)            5-6          6          1
mean intensity              0.88         0.888      0.887
background                  0.79         0.837      0.820
wall                        0.10         0.056      0.074
bed                         0.041        0.040      0.039
cabinet/shelf/desk          0.030        0.030      0.029
sofa                        0.014        0.015      0.015
chair                       0.010        0.010      0.010
table                       0.009        0.009      0.009
lighting                    0.003        0.003      0.003
pier/stool                  0.001        0.0007     0.0007
others                      < 0.001      0.0001     0.0001
==========================  ===========  =========  ========

The one clear gap is the wall share: 6 px strokes around 6.3 rooms of ordinary sizes cover
about 0.056 of a scene layout; the real 0.10 at the same stroke and coverage needs about 1.7
times the wall length (more partitions, or each room outlined separately where two meet), which
the generator does not invent. Mean intensity is over all layouts. Across seeds 0-5 (2,000
layouts each) the empty share ranges 0.41-0.46, the duplicate share 0.10-0.11, rooms per scene
6.2-6.6.

Everything is measured in metres and scaled to pixels at the end, so any resolution shows the
same apartments. Apartment ``k`` depends only on ``(seed, k)`` and the set lists apartments in
order, each as its scene then its rooms, until ``samples`` images: the first 100 layouts of a
1,000-layout set are the 100 layouts of a 100-layout set.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import file_lock, write_text_atomic
from ..palette import BACKGROUND, CLASS_NAMES, NUM_CLASSES, PALETTE, WALL, class_map_hash, class_to_rgb
from .manifest import COLUMNS

BED, CABINET, CHAIR, LAMP, OTHERS, STOOL, SOFA, TABLE = (
    CLASS_NAMES.index(name)
    for name in ("bed", "cabinet/shelf/desk", "chair", "lighting", "others", "pier/stool", "sofa", "table")
)

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 in metres
Segment = tuple[tuple[float, float], tuple[float, float]]  # an axis-aligned wall piece, in metres
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, ends exclusive

WALL_PX_AT_512 = 5.5  # the real scene layouts' wall stroke is 5-6 px
EMPTY_APARTMENT_SHARE = 0.08  # unfurnished apartments: their scene and every room is empty
FURNISHED_ROOM_SHARE = (0.45, 0.86)  # range of the share of an apartment's rooms that get furniture
COPY_SHARE = 0.1  # apartments listed again, bit-identical, under a new scene id
MIN_ROOM_SIDE = 1.5  # metres
FURNISHABLE_SIDE = 2.3  # a room narrower than this stays unfurnished (a hall, a bathroom)
CLEARANCE = 0.12  # metres between a wall's centre line and the furniture against it


# ---- furniture, in metres -----------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A piece of furniture seen from above: a rectangle, a rounded rectangle or an ellipse."""

    kind: str  # "rect", "rounded" or "blob"
    box: Rect
    cls: int
    radius: float = 0.0  # corner radius of a "rounded" shape, metres


@dataclass
class Furniture:
    """The furniture placed so far in a room; ``place`` refuses what leaves ``area`` or overlaps."""

    area: Rect
    shapes: list[Shape] = field(default_factory=list)
    occupied: list[Rect] = field(default_factory=list)

    def within(self, area: Rect) -> Furniture:
        """The same room's furniture, placing into a part of it (a living room's dining corner)."""
        return Furniture(area, self.shapes, self.occupied)

    def free(self, box: Rect) -> bool:
        a = self.area
        if box[0] < a[0] - 1e-9 or box[1] < a[1] - 1e-9 or box[2] > a[2] + 1e-9 or box[3] > a[3] + 1e-9:
            return False
        return not any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in self.occupied)

    def place(self, box: Rect, cls: int, kind: str = "rect", radius: float = 0.0) -> bool:
        if not self.free(box):
            return False
        self.put(box, cls, kind, radius)
        self.occupied.append(box)
        return True

    def put(self, box: Rect, cls: int, kind: str = "rect", radius: float = 0.0) -> None:
        """Draw without claiming the floor: a lamp on a night-stand, a pendant over a table."""
        self.shapes.append(Shape(kind, box, cls, radius))


SIDES = ("top", "bottom", "left", "right")
OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


def _against(area: Rect, side: str, along: float, width: float, depth: float, gap: float = 0.03) -> Rect:
    """A ``width`` x ``depth`` item with its back to wall ``side``, ``along`` in [0, 1] of the wall."""
    x0, y0, x1, y1 = area
    if side in ("top", "bottom"):
        cx = x0 + width / 2 + along * max(0.0, (x1 - x0) - width)
        y = y0 + gap if side == "top" else y1 - gap - depth
        return (cx - width / 2, y, cx + width / 2, y + depth)
    cy = y0 + width / 2 + along * max(0.0, (y1 - y0) - width)
    x = x0 + gap if side == "left" else x1 - gap - depth
    return (x, cy - width / 2, x + depth, cy + width / 2)


def _square(cx: float, cy: float, half: float) -> Rect:
    return (cx - half, cy - half, cx + half, cy + half)


def _centre(box: Rect) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _ahead(item: Rect, side: str, distance: float) -> tuple[float, float]:
    """The point ``distance`` in front of the middle of an item standing against wall ``side``."""
    cx, cy = _centre(item)
    if side == "top":
        return cx, item[3] + distance
    if side == "bottom":
        return cx, item[1] - distance
    if side == "left":
        return item[2] + distance, cy
    return item[0] - distance, cy


def _in_front(item: Rect, side: str, distance: float, half: float) -> Rect:
    """A square of half-size ``half`` centred ``distance`` in front of an item against ``side``."""
    return _square(*_ahead(item, side, distance), half)


def _sides(rng: np.random.Generator, exclude: Iterable[str] = ()) -> list[str]:
    return [str(s) for s in rng.permutation(SIDES) if s not in set(exclude)]


def _bedroom(f: Furniture, rng: np.random.Generator) -> None:
    double = rng.random() < 0.8
    width = rng.uniform(1.6, 2.0) if double else rng.uniform(1.0, 1.3)
    length = rng.uniform(1.95, 2.15)
    head = next(
        (s for s in _sides(rng) if f.place(_against(f.area, s, rng.uniform(0.25, 0.75), width, length), BED)), None
    )
    if head is None:
        _study(f, rng)
        return
    bed = f.occupied[-1]
    horizontal = head in ("top", "bottom")
    for before in (True, False):  # night-stands either side of the head, a lamp on some
        if rng.random() < 0.85:
            w = rng.uniform(0.4, 0.55)
            if horizontal:
                x = bed[0] - 0.05 - w if before else bed[2] + 0.05
                y = bed[1] if head == "top" else bed[3] - w
            else:
                y = bed[1] - 0.05 - w if before else bed[3] + 0.05
                x = bed[0] if head == "left" else bed[2] - w
            stand = (x, y, x + w, y + w)
            if f.place(stand, CABINET) and rng.random() < 0.5:
                f.put(_square((stand[0] + stand[2]) / 2, (stand[1] + stand[3]) / 2, 0.17), LAMP, "blob")
    for side in _sides(rng, exclude=(head,)):  # a wardrobe along another wall
        if f.place(_against(f.area, side, rng.uniform(0, 1), rng.uniform(1.2, 2.6), 0.6), CABINET):
            break
    if rng.random() < 0.4:  # a chest of drawers
        for side in _sides(rng, exclude=(head,)):
            if f.place(_against(f.area, side, rng.uniform(0, 1), rng.uniform(0.8, 1.2), 0.5), CABINET):
                break
    if rng.random() < 0.3:
        _desk(f, rng)
    if rng.random() < 0.4:  # a dressing table and its stool
        for side in _sides(rng, exclude=(head,)):
            table = _against(f.area, side, rng.uniform(0, 1), rng.uniform(0.9, 1.2), 0.45)
            if f.free(_in_front(table, side, 0.45, 0.2)) and f.place(table, CABINET):
                f.place(_in_front(table, side, 0.45, 0.2), STOOL, "blob")
                break


def _desk(f: Furniture, rng: np.random.Generator) -> None:
    for side in _sides(rng):
        desk = _against(f.area, side, rng.uniform(0, 1), rng.uniform(1.0, 1.5), rng.uniform(0.55, 0.7))
        chair = _in_front(desk, side, 0.4, 0.24)
        if f.free(chair) and f.place(desk, CABINET):
            f.place(chair, CHAIR, "rounded", 0.08)
            if rng.random() < 0.4:
                f.put(_square(desk[0] + 0.22, desk[1] + 0.22, 0.12), LAMP, "blob")
            return


def _lounge(f: Furniture, rng: np.random.Generator) -> None:
    """Sofa, coffee table in front, TV cabinet opposite, armchairs, a floor lamp."""
    side = sofa = None
    for s in _sides(rng):
        for width in (rng.uniform(1.8, 2.5), 1.6):  # a shorter sofa where a long one does not fit
            box = _against(f.area, s, rng.uniform(0.3, 0.7), width, rng.uniform(0.8, 0.9))
            if f.place(box, SOFA, "rounded", 0.15):
                side, sofa = s, box
                break
        if sofa:
            break
    if side is None or sofa is None:
        return
    cx, cy = _centre(sofa)
    tw, td = rng.uniform(0.9, 1.2), rng.uniform(0.5, 0.6)
    fx, fy = _ahead(sofa, side, 0.45 + td / 2)
    if side in ("left", "right"):
        tw, td = td, tw
    table = (fx - tw / 2, fy - td / 2, fx + tw / 2, fy + td / 2)
    if rng.random() < 0.7:
        f.place(table, TABLE)
    if rng.random() < 0.2:  # a chaise end: the sofa turns into an L
        depth = sofa[3] - sofa[1] if side in ("top", "bottom") else sofa[2] - sofa[0]
        left_end = rng.random() < 0.5
        if side in ("top", "bottom"):
            x = sofa[0] if left_end else sofa[2] - depth
            y = sofa[3] if side == "top" else sofa[1] - 0.8
            f.place((x, y, x + depth, y + 0.8), SOFA, "rounded", 0.12)
        else:
            y = sofa[1] if left_end else sofa[3] - depth
            x = sofa[2] if side == "left" else sofa[0] - 0.8
            f.place((x, y, x + 0.8, y + depth), SOFA, "rounded", 0.12)
    f.place(_against(f.area, OPPOSITE[side], rng.uniform(0.3, 0.7), rng.uniform(1.4, 2.2), 0.45), CABINET)
    for _ in range(int(rng.integers(0, 3))):
        arm_side = str(rng.choice([s for s in SIDES if s not in (side, OPPOSITE[side])]))
        arm = _against(f.area, arm_side, rng.uniform(0.3, 0.7), 0.85, 0.85, gap=0.25)
        f.place(arm, SOFA if rng.random() < 0.4 else CHAIR, "rounded", 0.15)
    if rng.random() < 0.6:  # a floor lamp at one end of the sofa
        first_end = rng.random() < 0.5
        if side in ("top", "bottom"):
            lamp = (sofa[0] - 0.25 if first_end else sofa[2] + 0.25, cy)
        else:
            lamp = (cx, sofa[1] - 0.25 if first_end else sofa[3] + 0.25)
        f.place(_square(*lamp, 0.2), LAMP, "blob")
    if rng.random() < 0.5:
        ox = table[2] + 0.45 if rng.random() < 0.5 else table[0] - 0.45
        f.place(_square(ox, (table[1] + table[3]) / 2, 0.25), STOOL, "blob")
    if rng.random() < 0.08:  # a plant in a corner: "others"
        area = f.area
        x = area[0] + 0.3 if rng.random() < 0.5 else area[2] - 0.3
        y = area[1] + 0.3 if rng.random() < 0.5 else area[3] - 0.3
        f.place(_square(x, y, 0.2), OTHERS, "blob")


def _dining(f: Furniture, rng: np.random.Generator) -> None:
    """A table with chairs around it, a sideboard, a pendant lamp over the table."""
    area = f.area
    cx = (area[0] + area[2]) / 2 + rng.uniform(-0.2, 0.2)
    cy = (area[1] + area[3]) / 2 + rng.uniform(-0.2, 0.2)
    long_x = (area[2] - area[0]) >= (area[3] - area[1])
    for seats in (int(rng.choice([4, 6, 6, 8])), 4, 2):
        per_side = max(1, seats // 2)
        length, width = 0.25 + 0.55 * per_side, rng.uniform(0.8, 0.9)
        w, h = (length, width) if long_x else (width, length)
        table = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if f.free((table[0] - 0.6, table[1] - 0.6, table[2] + 0.6, table[3] + 0.6)):
            break
    else:
        return
    round_table = seats <= 4 and rng.random() < 0.3
    if round_table:
        table = _square(cx, cy, max(w, h) / 2)
        f.place(table, TABLE, "blob")
    else:
        f.place(table, TABLE)
    half = rng.uniform(0.24, 0.28)
    for k in range(per_side):
        t = (k + 0.5) / per_side
        for before in (True, False):
            if long_x:
                x, y = table[0] + t * (table[2] - table[0]), (table[1] - 0.32 if before else table[3] + 0.32)
            else:
                x, y = (table[0] - 0.32 if before else table[2] + 0.32), table[1] + t * (table[3] - table[1])
            f.place(_square(x, y, half), CHAIR, "rounded", 0.07)
    if rng.random() < 0.5:
        f.put(_square(cx, cy, 0.17), LAMP, "blob")
    for side in _sides(rng):
        if f.place(_against(area, side, rng.uniform(0, 1), rng.uniform(1.0, 1.8), 0.45), CABINET):
            break


def _study(f: Furniture, rng: np.random.Generator) -> None:
    _desk(f, rng)
    if rng.random() < 0.4:  # a footstool
        f.place(
            _square(rng.uniform(f.area[0] + 0.5, f.area[2] - 0.5), rng.uniform(f.area[1] + 0.5, f.area[3] - 0.5), 0.2),
            STOOL,
            "blob",
        )
    for _ in range(int(rng.integers(1, 3))):
        f.place(_against(f.area, str(rng.choice(SIDES)), rng.uniform(0, 1), rng.uniform(1.0, 2.0), 0.4), CABINET)
    if rng.random() < 0.4:  # a guest bed or a sofa
        for side in _sides(rng):
            if rng.random() < 0.5:
                done = f.place(_against(f.area, side, rng.uniform(0, 1), 0.95, 2.0), BED)
            else:
                done = f.place(_against(f.area, side, rng.uniform(0, 1), 1.8, 0.85), SOFA, "rounded", 0.15)
            if done:
                break


def _living(f: Furniture, rng: np.random.Generator) -> None:
    """A living room; a large one is a living-dining room: a lounge at one end, a dining set at the other."""
    x0, y0, x1, y1 = f.area
    if (x1 - x0) * (y1 - y0) > 18 and max(x1 - x0, y1 - y0) > 4.5 and rng.random() < 0.85:
        t = rng.uniform(0.52, 0.62)
        if x1 - x0 >= y1 - y0:
            x = x0 + t * (x1 - x0)
            lounge, dining = (x0, y0, x, y1), (x, y0, x1, y1)
        else:
            y = y0 + t * (y1 - y0)
            lounge, dining = (x0, y0, x1, y), (x0, y, x1, y1)
        if rng.random() < 0.5:
            lounge, dining = dining, lounge
        _lounge(f.within(lounge), rng)
        _dining(f.within(dining), rng)
    else:
        _lounge(f, rng)


FURNISH = {"living": _living, "bedroom": _bedroom, "study": _study, "dining": _dining}
FURNISHED_KINDS = ("bedroom", "bedroom", "bedroom", "bedroom", "bedroom", "study", "dining")


# ---- apartments, in metres ----------------------------------------------------------------


@dataclass(frozen=True)
class Framing:
    """Where a rectangle lies on the canvas: its longer side spans ``fill`` of the frame, and it
    sits at ``offset`` (0 to 1 along each axis) of the room left around it."""

    fill: float
    offset: tuple[float, float]


@dataclass(frozen=True)
class Room:
    room_id: str
    kind: str
    rect: Rect
    furniture: tuple[Shape, ...]
    framing: Framing  # in the room's own layout


@dataclass(frozen=True)
class Apartment:
    number: int  # apartment ``number`` of the seed's sequence
    rooms: tuple[Room, ...]
    doors: tuple[Segment, ...]  # gaps cut into the walls
    framing: Framing  # in the scene layout

    @property
    def extent(self) -> Rect:
        rects = [r.rect for r in self.rooms]
        return (min(r[0] for r in rects), min(r[1] for r in rects), max(r[2] for r in rects), max(r[3] for r in rects))


def _partition(rect: Rect, rooms: int, rng: np.random.Generator) -> list[Rect]:
    """Cut the flat into ``rooms`` rectangles: a larger part is more likely to be cut, mostly
    across its longer side, never into a room narrower than MIN_ROOM_SIDE."""
    parts = [rect]
    for _ in range(40 * rooms):
        if len(parts) == rooms:
            break
        areas = np.array([(r[2] - r[0]) * (r[3] - r[1]) for r in parts])
        k = int(rng.choice(len(parts), p=areas / areas.sum()))
        x0, y0, x1, y1 = parts[k]
        across_x = (x1 - x0 >= y1 - y0) == (rng.random() < 0.85)
        length = (x1 - x0) if across_x else (y1 - y0)
        cut = rng.uniform(0.3, 0.7) * length
        if min(cut, length - cut) < MIN_ROOM_SIDE:
            continue
        parts[k : k + 1] = (
            [(x0, y0, x0 + cut, y1), (x0 + cut, y0, x1, y1)]
            if across_x
            else [(x0, y0, x1, y0 + cut), (x0, y0 + cut, x1, y1)]
        )
    return parts


def _corner_room(parts: list[Rect], extent: Rect) -> int | None:
    """A room in a corner of the flat whose removal leaves the flat's extent (an L-shaped flat)."""
    candidates = []
    for i, (x0, y0, x1, y1) in enumerate(parts):
        at_x = abs(x0 - extent[0]) < 1e-9 or abs(x1 - extent[2]) < 1e-9
        at_y = abs(y0 - extent[1]) < 1e-9 or abs(y1 - extent[3]) < 1e-9
        spans = abs(x1 - x0 - (extent[2] - extent[0])) < 1e-9 or abs(y1 - y0 - (extent[3] - extent[1])) < 1e-9
        if at_x and at_y and not spans:
            candidates.append(i)
    return (
        min(candidates, key=lambda i: (parts[i][2] - parts[i][0]) * (parts[i][3] - parts[i][1])) if candidates else None
    )


def _shared_wall(a: Rect, b: Rect) -> Segment | None:
    for ax, bx in ((a[2], b[0]), (a[0], b[2])):
        if abs(ax - bx) < 1e-9:
            lo, hi = max(a[1], b[1]), min(a[3], b[3])
            if hi - lo > 1.2:
                return (ax, lo), (ax, hi)
    for ay, by in ((a[3], b[1]), (a[1], b[3])):
        if abs(ay - by) < 1e-9:
            lo, hi = max(a[0], b[0]), min(a[2], b[2])
            if hi - lo > 1.2:
                return (lo, ay), (hi, ay)
    return None


def _door(wall: Segment, width: float, rng: np.random.Generator) -> Segment:
    (ax, ay), (bx, by) = wall
    length = abs(bx - ax) + abs(by - ay)
    width = min(width, length - 0.4)
    start = rng.uniform(0.2, length - width - 0.2)
    if ay == by:
        x = min(ax, bx) + start
        return (x, ay), (x + width, ay)
    y = min(ay, by) + start
    return (ax, y), (ax, y + width)


def _doors(rects: list[Rect], first: int, extent: Rect, rng: np.random.Generator) -> list[Segment]:
    """A door on every wall of a tree joining all rooms from room ``first``, a few more, and an
    entrance on an outer wall."""
    n = len(rects)
    walls = {(i, j): w for i in range(n) for j in range(i + 1, n) if (w := _shared_wall(rects[i], rects[j]))}
    reached, frontier, doors = {first}, [first], []
    while frontier:
        i = frontier.pop(int(rng.integers(len(frontier))))
        for j in map(int, rng.permutation(n)):
            wall = walls.get((min(i, j), max(i, j)))
            if wall and j not in reached:
                reached.add(j)
                frontier.append(j)
                doors.append(_door(wall, rng.uniform(0.8, 0.95), rng))
                walls.pop((min(i, j), max(i, j)))
    doors += [_door(w, rng.uniform(0.8, 0.95), rng) for w in walls.values() if rng.random() < 0.2]
    outer = []
    for i in [first] + [k for k in range(n) if k != first]:
        x0, y0, x1, y1 = rects[i]
        for wall, on_edge in (
            (((x0, y0), (x1, y0)), abs(y0 - extent[1]) < 1e-9),
            (((x0, y1), (x1, y1)), abs(y1 - extent[3]) < 1e-9),
            (((x0, y0), (x0, y1)), abs(x0 - extent[0]) < 1e-9),
            (((x1, y0), (x1, y1)), abs(x1 - extent[2]) < 1e-9),
        ):
            length = abs(wall[1][0] - wall[0][0]) + abs(wall[1][1] - wall[0][1])
            if on_edge and length > 1.5:
                outer.append(wall)
        if outer:
            break
    if outer:
        doors.append(_door(outer[int(rng.integers(len(outer)))], 1.0, rng))
    return doors


def _kinds(rects: list[Rect], furnished: int, rng: np.random.Generator) -> list[str]:
    """The largest room is the living room; the next ``furnished - 1`` that are wide enough are
    bedrooms, studies, dining rooms; the rest stay unfurnished (kitchens, bathrooms, halls, ...)."""
    order = sorted(range(len(rects)), key=lambda i: -(rects[i][2] - rects[i][0]) * (rects[i][3] - rects[i][1]))
    kinds = [""] * len(rects)
    for rank, i in enumerate(order):
        x0, y0, x1, y1 = rects[i]
        narrow = min(x1 - x0, y1 - y0) < FURNISHABLE_SIDE
        if rank < furnished and not narrow:
            kinds[i] = "living" if rank == 0 else str(rng.choice(FURNISHED_KINDS))
        elif min(x1 - x0, y1 - y0) < 1.8:
            kinds[i] = "hall"
        else:
            kinds[i] = str(rng.choice(["kitchen", "bathroom", "storage", "balcony"]))
    return kinds


def apartment_plan(number: int, seed: int = 0) -> Apartment:
    """Apartment ``number`` of the sequence drawn from ``seed``, in metres (deterministic)."""
    rng = np.random.default_rng([seed, number])
    n = int(np.clip(3 + rng.poisson(3.35), 3, 12))
    area = n * rng.uniform(10.0, 16.0)
    aspect = rng.uniform(1.0, 1.4)
    width, height = math.sqrt(area * aspect), math.sqrt(area / aspect)
    if rng.random() < 0.4:
        width, height = height, width
    l_shaped = n >= 5 and rng.random() < 0.3
    rects = _partition((0.0, 0.0, width, height), n + l_shaped, rng)
    if l_shaped and len(rects) > n and (corner := _corner_room(rects, (0.0, 0.0, width, height))) is not None:
        rects.pop(corner)
    extent = (min(r[0] for r in rects), min(r[1] for r in rects), max(r[2] for r in rects), max(r[3] for r in rects))
    furnished = (
        0 if rng.random() < EMPTY_APARTMENT_SHARE else max(1, round(len(rects) * rng.uniform(*FURNISHED_ROOM_SHARE)))
    )
    kinds = _kinds(rects, furnished, rng)
    ids = rng.choice(9000, size=len(rects), replace=False) + 1000
    rooms = []
    for rect, kind, room_id in zip(rects, kinds, ids):
        f = Furniture((rect[0] + CLEARANCE, rect[1] + CLEARANCE, rect[2] - CLEARANCE, rect[3] - CLEARANCE))
        if kind in FURNISH:
            FURNISH[kind](f, rng)
            if rng.random() < 0.5:  # a ceiling lamp
                f.put(_square(*_centre(f.area), rng.uniform(0.18, 0.26)), LAMP, "blob")
        framing = Framing(rng.uniform(0.84, 0.96), (rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)))
        rooms.append(Room(str(int(room_id)), kind, rect, tuple(f.shapes), framing))
    living = kinds.index("living") if "living" in kinds else 0
    doors = _doors(rects, living, extent, rng)
    framing = Framing(rng.uniform(0.76, 0.94), (rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0)))
    return Apartment(number, tuple(rooms), tuple(doors), framing)


# ---- drawing, in pixels -------------------------------------------------------------------


def wall_pixels(resolution: int) -> int:
    """The wall stroke in pixels: about 5.5 at 512, never under 1."""
    return max(1, int(resolution * WALL_PX_AT_512 / 512 + 0.5))


@dataclass(frozen=True)
class Camera:
    """Metres to pixels: pixel = origin + metres * scale."""

    scale: float
    origin: tuple[float, float]
    resolution: int

    @classmethod
    def framing(cls, rect: Rect, framing: Framing, resolution: int) -> Camera:
        w, h = rect[2] - rect[0], rect[3] - rect[1]
        scale = framing.fill * resolution / max(w, h)
        free_x, free_y = resolution - w * scale, resolution - h * scale
        return cls(
            scale,
            (framing.offset[0] * free_x - rect[0] * scale, framing.offset[1] * free_y - rect[1] * scale),
            resolution,
        )

    def x(self, metres: float) -> int:
        return round(self.origin[0] + metres * self.scale)

    def y(self, metres: float) -> int:
        return round(self.origin[1] + metres * self.scale)

    def box(self, rect: Rect) -> Box:
        """Pixels of a rectangle, ends exclusive."""
        return self.x(rect[0]), self.y(rect[1]), self.x(rect[2]), self.y(rect[3])

    def wall_box(self, rect: Rect) -> Box:
        """Pixels of a rectangle with the wall strokes on its edges (ends exclusive)."""
        w = wall_pixels(self.resolution)
        x0, y0, x1, y1 = self.box(rect)
        return x0 - w // 2, y0 - w // 2, x1 - w // 2 + w, y1 - w // 2 + w


def _draw_furniture(draw: ImageDraw.ImageDraw, shape: Shape, camera: Camera) -> None:
    x0, y0, x1, y1 = camera.box(shape.box)
    if x1 <= x0 or y1 <= y0:
        return  # smaller than a pixel at this resolution
    box = (x0, y0, x1 - 1, y1 - 1)
    radius = int(shape.radius * camera.scale)
    if shape.kind == "blob" and min(x1 - x0, y1 - y0) >= 3:
        draw.ellipse(box, fill=shape.cls)
    elif shape.kind == "rounded" and radius >= 2 and min(x1 - x0, y1 - y0) > 2 * radius:
        draw.rounded_rectangle(box, radius=radius, fill=shape.cls)
    else:
        draw.rectangle(box, fill=shape.cls)


def _fill(class_map: np.ndarray, box: Box, value: int, where: int | None = None) -> None:
    r = class_map.shape[0]
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], r), min(box[3], r)
    if x1 <= x0 or y1 <= y0:
        return
    region = class_map[y0:y1, x0:x1]
    if where is None:
        region[...] = value
    else:
        region[region == where] = value


def _segment_box(segment: Segment, camera: Camera, stroke: int) -> Box:
    """The pixels of a wall piece drawn with a stroke ``stroke`` pixels thick (ends exclusive)."""
    (ax, ay), (bx, by) = segment
    half = stroke // 2
    if ay == by:
        y = camera.y(ay) - half
        return camera.x(min(ax, bx)) - half, y, camera.x(max(ax, bx)) - half + stroke, y + stroke
    x = camera.x(ax) - half
    return x, camera.y(min(ay, by)) - half, x + stroke, camera.y(max(ay, by)) - half + stroke


def _door_box(segment: Segment, camera: Camera, stroke: int) -> Box:
    """The gap a door cuts across the stroke: its own length, the stroke's full thickness."""
    (ax, ay), (bx, by) = segment
    half = stroke // 2
    if ay == by:
        y = camera.y(ay) - half
        return camera.x(min(ax, bx)), y, camera.x(max(ax, bx)), y + stroke
    x = camera.x(ax) - half
    return x, camera.y(min(ay, by)), x + stroke, camera.y(max(ay, by))


def draw_apartment(apartment: Apartment, camera: Camera, crop: Rect | None = None) -> np.ndarray:
    """The class map of the apartment seen through ``camera``; with ``crop`` (a room's rectangle),
    only that room and its walls: everything outside is background."""
    r = camera.resolution
    image = Image.new("L", (r, r), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for room in apartment.rooms:
        if crop is None or room.rect == crop:
            for shape in room.furniture:
                _draw_furniture(draw, shape, camera)
    class_map = np.array(image)
    stroke = wall_pixels(r)
    for room in apartment.rooms:
        x0, y0, x1, y1 = room.rect
        for segment in (((x0, y0), (x1, y0)), ((x0, y1), (x1, y1)), ((x0, y0), (x0, y1)), ((x1, y0), (x1, y1))):
            _fill(class_map, _segment_box(segment, camera, stroke), WALL)
    for door in apartment.doors:
        _fill(class_map, _door_box(door, camera, stroke), BACKGROUND, where=WALL)
    if crop is not None:
        x0, y0, x1, y1 = (min(max(v, 0), r) for v in camera.wall_box(crop))
        kept = class_map[y0:y1, x0:x1].copy()
        class_map[...] = BACKGROUND
        class_map[y0:y1, x0:x1] = kept
    return class_map


# ---- the set ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticLayout:
    scene_id: str
    type: str  # "scene" or "room"
    room_id: str  # "scene" for a scene layout
    is_empty: bool  # no furniture pixel: walls and background only
    class_map: np.ndarray  # uint8 (resolution, resolution)
    apartment: int  # the number of the apartment drawn (a copy shows its original's)
    scene_box: Box | None = None  # a room's pixels in its scene's layout, walls included (ends exclusive)

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(class_to_rgb(self.class_map), "RGB")


def _empty(class_map: np.ndarray) -> bool:
    """Walls and background only: no furniture pixel."""
    return not bool(((class_map != WALL) & (class_map != BACKGROUND)).any())


def apartment_layouts(apartment: Apartment, scene_id: str, resolution: int) -> Iterator[SyntheticLayout]:
    """The apartment's scene layout, then each room's layout (its crop of the scene)."""
    scene_camera = Camera.framing(apartment.extent, apartment.framing, resolution)
    scene = draw_apartment(apartment, scene_camera)
    yield SyntheticLayout(scene_id, "scene", "scene", _empty(scene), scene, apartment.number)
    for room in apartment.rooms:
        camera = Camera.framing(room.rect, room.framing, resolution)
        crop = draw_apartment(apartment, camera, crop=room.rect)
        box = tuple(min(max(v, 0), resolution) for v in scene_camera.wall_box(room.rect))
        yield SyntheticLayout(scene_id, "room", room.room_id, _empty(crop), crop, apartment.number, box)


def _scene_id(seed: int, number: int) -> str:
    rng = np.random.default_rng([seed, number, 1])
    return f"{rng.integers(0, 16**8):08x}-{rng.integers(0, 16**4):04x}"


def _copies(seed: int) -> float:
    """The phase of the copy schedule: one apartment in 1 / COPY_SHARE, where it falls depends on the seed."""
    return float(np.random.default_rng([seed]).random())


def synthetic_layouts(samples: int, resolution: int = 512, seed: int = 0) -> Iterator[SyntheticLayout]:
    """The set's first ``samples`` layouts, in manifest order (deterministic)."""
    phase, originals, listed, number = _copies(seed), [], 0, 0
    while listed < samples:
        is_copy = originals and math.floor((number + 1) * COPY_SHARE + phase) > math.floor(number * COPY_SHARE + phase)
        if is_copy:
            drawn = originals[int(np.random.default_rng([seed, number, 2]).integers(len(originals)))]
        else:
            drawn = number
            originals.append(number)
        for layout in apartment_layouts(apartment_plan(drawn, seed), _scene_id(seed, number), resolution):
            yield layout
            listed += 1
            if listed == samples:
                return
        number += 1


def synthetic_layout(index: int, resolution: int = 512, seed: int = 0) -> SyntheticLayout:
    """Layout number ``index`` of the set drawn from ``seed``."""
    for i, layout in enumerate(synthetic_layouts(index + 1, resolution, seed)):
        if i == index:
            return layout
    raise IndexError(index)


def generate_layouts(out_dir: str | Path, samples: int, resolution: int = 512, seed: int = 0) -> Path:
    """Write ``samples`` layouts as PNGs under ``out_dir/images`` and ``out_dir/layouts.csv`` in
    the real manifest format (relative paths). Returns the manifest path.

    An existing complete set in ``out_dir`` is reused. The set appears whole or not at all: it is
    written into a temporary folder and renamed, under a lock, so concurrent jobs share one copy.
    """
    out_dir = Path(out_dir)
    manifest = out_dir / "layouts.csv"
    if manifest.is_file():
        return manifest
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir.parent / f".{out_dir.name}.lock"):
        if manifest.is_file():
            return manifest
        staging = out_dir.parent / f".{out_dir.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "images").mkdir(parents=True)
        rows = []
        for index, layout in enumerate(synthetic_layouts(samples, resolution, seed)):
            name = f"{index:06d}_{layout.scene_id}_{layout.room_id}.png"
            layout.image.save(staging / "images" / name, format="PNG", optimize=False)
            rows.append(
                [layout.scene_id, layout.type, layout.room_id, f"images/{name}", "true" if layout.is_empty else "false"]
            )
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        write_text_atomic(staging / "layouts.csv", text.getvalue())
        if out_dir.exists():  # an interrupted older attempt without a manifest
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    return manifest


# ---- figures, to compare with the real set ----------------------------------------------------


def _runs(mask: np.ndarray) -> np.ndarray:
    """For each True pixel, the length of the run of True it lies in along its row (row-major order)."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded.ravel())
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return np.repeat(lengths, lengths)


def stroke_width(class_map: np.ndarray) -> float:
    """The median wall thickness in pixels: for each wall pixel, the shorter of its horizontal and
    vertical wall runs (a straight stroke's thickness; at a corner, still the thinner way)."""
    mask = class_map == WALL
    if not mask.any():
        return float("nan")
    across = np.zeros(mask.shape, dtype=np.int64)
    across[mask] = _runs(mask)
    down = np.zeros(mask.shape[::-1], dtype=np.int64)
    down[mask.T] = _runs(mask.T)
    return float(np.median(np.minimum(across, down.T)[mask]))


def coverage(class_map: np.ndarray) -> float:
    """The share of the frame inside the bounding box of the drawing (the non-background pixels)."""
    rows, cols = np.nonzero(class_map != BACKGROUND)
    if not len(rows):
        return 0.0
    return float((np.ptp(rows) + 1) * (np.ptp(cols) + 1) / class_map.size)


@dataclass(frozen=True)
class SetFigures:
    """What the real set's statistics give, measured on a list of layouts."""

    images: int
    rooms_per_scene: float  # room layouts per scene layout
    room_share: float
    empty_share: float
    duplicate_share: float  # layouts whose class map an earlier layout already has
    scene_coverage: float  # mean bounding-box share of the frame, scene layouts
    room_coverage: float
    wall_px: float  # median stroke width, scene layouts
    scene_class_shares: tuple[float, ...]  # pixel share of each class over the scene layouts
    class_shares: tuple[float, ...]  # ... over all layouts
    mean_intensity: float  # mean RGB value / 255, all layouts

    @classmethod
    def of(cls, layouts: Iterable[SyntheticLayout]) -> SetFigures:
        counts = {"scene": np.zeros(NUM_CLASSES), "room": np.zeros(NUM_CLASSES)}
        kinds, empty, seen, duplicates, fill, walls = (
            {"scene": 0, "room": 0},
            0,
            set(),
            0,
            {"scene": [], "room": []},
            [],
        )
        for layout in layouts:
            kinds[layout.type] += 1
            empty += layout.is_empty
            identity = class_map_hash(layout.class_map)
            duplicates += identity in seen
            seen.add(identity)
            counts[layout.type] += np.bincount(layout.class_map.ravel(), minlength=NUM_CLASSES)
            fill[layout.type].append(coverage(layout.class_map))
            if layout.type == "scene":
                walls.append(stroke_width(layout.class_map))
        images = kinds["scene"] + kinds["room"]
        every = counts["scene"] + counts["room"]
        return cls(
            images=images,
            rooms_per_scene=kinds["room"] / max(kinds["scene"], 1),
            room_share=kinds["room"] / images,
            empty_share=empty / images,
            duplicate_share=duplicates / images,
            scene_coverage=float(np.mean(fill["scene"])) if fill["scene"] else float("nan"),
            room_coverage=float(np.mean(fill["room"])) if fill["room"] else float("nan"),
            wall_px=float(np.nanmedian(walls)) if walls else float("nan"),
            scene_class_shares=tuple(counts["scene"] / max(counts["scene"].sum(), 1)),
            class_shares=tuple(every / every.sum()),
            mean_intensity=float(every @ PALETTE.mean(axis=1) / 255 / every.sum()),
        )

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("rooms per scene", f"{self.rooms_per_scene:.2f}"),
            ("room share", f"{self.room_share:.3f}"),
            ("empty share", f"{self.empty_share:.3f}"),
            ("duplicate share", f"{self.duplicate_share:.3f}"),
            ("scene coverage", f"{self.scene_coverage:.2f}"),
            ("room coverage", f"{self.room_coverage:.2f}"),
            ("wall stroke (px)", f"{self.wall_px:.0f}"),
            ("mean intensity", f"{self.mean_intensity:.3f}"),
        ]
        rows += [(f"{name} (scenes)", f"{share:.4f}") for name, share in zip(CLASS_NAMES, self.scene_class_shares)]
        rows += [(f"{name} (all)", f"{share:.4f}") for name, share in zip(CLASS_NAMES, self.class_shares)]
        return rows


def main(argv: list[str] | None = None) -> int:
    """Print the figures of a synthetic set (drawn in memory, nothing written)."""
    parser = argparse.ArgumentParser(prog="python -m imginav_core.data.synthetic", description=main.__doc__)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    figures = SetFigures.of(synthetic_layouts(args.samples, args.resolution, args.seed))
    print(f"{figures.images} layouts at {args.resolution} px, seed {args.seed}")
    for name, value in figures.rows():
        print(f"{name:34s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
