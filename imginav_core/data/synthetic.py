"""Synthetic top-down layouts: the embedded default dataset for anyone without the real renders.

Built like the real set: apartments of 3-12 rooms (``type`` scene, ``room_id`` ``scene``), each
followed by its rooms as layouts of their own (``type`` room, the apartment's ``scene_id``), a
room being its apartment's crop (the same walls, doors and furniture) framed on the room. Plans
are in metres, drawn aliased, so every pixel is a palette colour at any resolution. Apartment
``k`` depends only on ``(seed, k)``, and the set lists apartments in order until ``samples``
images: a smaller set is the start of a larger one. book/using/probe.md ("The synthetic layouts")
describes the set and gives its figures beside the real set's, and where they differ (the wall
share); ``tests/test_synthetic.py`` computes them and holds each to a band around the real value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import build_folder, csv_text, write_text_atomic
from ..palette import BACKGROUND, CLASS_NAMES, WALL, class_to_rgb
from .manifest import COLUMNS

BED, CABINET, CHAIR, LAMP, OTHERS, STOOL, SOFA, TABLE = (
    CLASS_NAMES.index(name)
    for name in ("bed", "cabinet/shelf/desk", "chair", "lighting", "others", "pier/stool", "sofa", "table")
)
Rect = tuple[float, float, float, float]  # x0, y0, x1, y1: metres in a plan, pixels (ends exclusive) once drawn
Shape = tuple[Rect, int, float]  # a piece of furniture in a room: box, class, corner radius (ROUND: a blob)
Piece = tuple[int, float, float, float, float, float]  # a piece in its group's frame: class, u0, v0, u1, v1, radius

WALL_PX_AT_512 = 5.5  # the real layouts' wall stroke is 5-6 px at 512
EMPTY_APARTMENT_SHARE = 0.08  # apartments without furniture: their scene and every room is empty
FURNISHED_ROOM_SHARE = (0.45, 0.86)  # range of the share of an apartment's rooms that get furniture
COPY_SHARE = 0.1  # apartments listed again, bit-identical, under a new scene id
MIN_ROOM_SIDE = 1.5  # metres
FURNISHABLE_SIDE = 2.3  # a narrower room stays unfurnished (a hall, a bathroom)
CLEARANCE = 0.12  # metres between a wall's centre line and the furniture against it
ROUND = 9.0  # a corner radius larger than any piece: drawn as a circle
SIDES = ("top", "bottom", "left", "right")  # the walls of a room
OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
# a group's frame against each wall: the directions of u (along the wall) and v (into the room)
FRAMES = {"top": ((1, 0), (0, 1)), "bottom": ((1, 0), (0, -1)), "left": ((0, 1), (1, 0)), "right": ((0, 1), (-1, 0))}


def _blob(cls: int, u: float, v: float, half: float) -> Piece:
    """A round piece (a lamp, a stool) centred on (u, v)."""
    return cls, u - half, v - half, u + half, v + half, ROUND


@dataclass
class Furnisher:
    """A room's furniture, placed in groups (a bed and its night-stands, a desk and its chair), each
    laid out in its own frame, ``u`` along the wall it stands against and ``v`` away from it. A
    group goes in only where each piece stays inside ``area`` and off the groups placed before."""

    area: Rect
    rng: np.random.Generator
    shapes: list[Shape] = field(default_factory=list)
    taken: list[Rect] = field(default_factory=list)

    def free(self, box: Rect) -> bool:
        a = self.area
        if box[0] < a[0] or box[1] < a[1] or box[2] > a[2] or box[3] > a[3]:
            return False
        return not any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in self.taken)

    def put(self, pieces: list[Piece], origin: tuple[float, float], side: str) -> bool:
        """Lay out ``pieces`` with the frame's (0, 0) at ``origin``, facing away from wall ``side``."""
        (ux, uy), (vx, vy) = FRAMES[side]
        boxes = []
        for _, u0, v0, u1, v1, _ in pieces:
            xs = origin[0] + u0 * ux + v0 * vx, origin[0] + u1 * ux + v1 * vx
            ys = origin[1] + u0 * uy + v0 * vy, origin[1] + u1 * uy + v1 * vy
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
        if not all(map(self.free, boxes)):
            return False
        self.shapes += [(box, piece[0], piece[5]) for box, piece in zip(boxes, pieces)]
        self.taken += boxes
        return True

    def on_wall(self, pieces: list[Piece], sides=SIDES, along=(0.0, 1.0), gap=0.03) -> str | None:
        """Stand a group ``gap`` off one of ``sides`` (tried in random order) at a random point ``along``
        it (0: one end, 1: the other); the side it went to, or None."""
        width = max(piece[3] for piece in pieces)
        x0, y0, x1, y1 = self.area
        for side in self.rng.permutation(sides).tolist():
            t = self.rng.uniform(*along)
            if side in ("top", "bottom"):
                origin = x0 + t * max(0.0, x1 - x0 - width), y0 + gap if side == "top" else y1 - gap
            else:
                origin = x0 + gap if side == "left" else x1 - gap, y0 + t * max(0.0, y1 - y0 - width)
            if self.put(pieces, origin, side):
                return side
        return None


def _bedroom(f: Furnisher) -> None:
    """A bed with its head to a wall and night-stands either side (a lamp on some), a wardrobe, now
    and then a chest of drawers, a desk, a dressing table with its stool."""
    rng = f.rng
    width, length = rng.uniform(1.6, 2.0) if rng.random() < 0.8 else rng.uniform(1.0, 1.3), rng.uniform(1.95, 2.15)
    s = rng.uniform(0.4, 0.55)  # a night-stand's side
    bed, stands = [(BED, s + 0.05, 0, s + 0.05 + width, length, 0)], []
    for u in (0, width + s + 0.1):
        if rng.random() < 0.85:
            stands.append((CABINET, u, 0, u + s, s, 0))
            if rng.random() < 0.4:
                stands.append(_blob(LAMP, u + s / 2, s / 2, 0.17))
    head = f.on_wall(bed + stands, along=(0.25, 0.75)) or f.on_wall(bed, along=(0.25, 0.75))
    if head is None:
        return _study(f)
    others = [side for side in SIDES if side != head]
    f.on_wall([(CABINET, 0, 0, rng.uniform(1.2, 2.2), 0.6, 0)], others)  # a wardrobe
    if rng.random() < 0.3:
        f.on_wall([(CABINET, 0, 0, rng.uniform(0.8, 1.2), 0.5, 0)], others)
    if rng.random() < 0.3:
        _desk(f)
    if rng.random() < 0.4:
        w = rng.uniform(0.9, 1.2)
        f.on_wall([(CABINET, 0, 0, w, 0.45, 0), _blob(STOOL, w / 2, 0.9, 0.22)], others)


def _desk(f: Furnisher) -> None:
    w, d = f.rng.uniform(1.0, 1.5), f.rng.uniform(0.55, 0.7)
    lamp = [_blob(LAMP, 0.22, 0.22, 0.12)] if f.rng.random() < 0.4 else []
    f.on_wall([(CABINET, 0, 0, w, d, 0), (CHAIR, w / 2 - 0.24, d + 0.16, w / 2 + 0.24, d + 0.64, 0.08), *lamp])


def _study(f: Furnisher) -> None:
    """A desk and its chair, shelves, now and then a footstool and a guest bed or a sofa."""
    rng, (x0, y0, x1, y1) = f.rng, f.area
    _desk(f)
    for _ in range(int(rng.integers(1, 3))):
        f.on_wall([(CABINET, 0, 0, rng.uniform(1.0, 2.0), 0.4, 0)])
    if rng.random() < 0.6:
        f.put([_blob(STOOL, 0, 0, 0.22)], (rng.uniform(x0 + 0.5, x1 - 0.5), rng.uniform(y0 + 0.5, y1 - 0.5)), "top")
    if rng.random() < 0.4:  # a guest bed or a sofa
        f.on_wall([(BED, 0, 0, 0.95, 2.0, 0)] if rng.random() < 0.5 else [(SOFA, 0, 0, 1.8, 0.85, 0.15)])


def _lounge(f: Furnisher) -> None:
    """A sofa with a floor lamp at one end and a coffee table and a stool in front, a TV cabinet on the
    opposite wall, armchairs by the side walls, now and then a plant ("others")."""
    rng = f.rng
    w, d, tw, td = rng.uniform(1.8, 2.5), rng.uniform(0.8, 0.9), rng.uniform(0.9, 1.2), rng.uniform(0.5, 0.6)
    sofa = [(SOFA, 0.45, 0, 0.45 + w, d, 0.15)]
    extras = [_blob(LAMP, 0.2, d / 2, 0.2)] if rng.random() < 0.5 else []
    if rng.random() < 0.6:
        u, v = 0.45 + w / 2, d + 0.45 + td / 2  # the coffee table's centre
        extras.append((TABLE, u - tw / 2, v - td / 2, u + tw / 2, v + td / 2, 0))
        if rng.random() < 0.6:
            extras.append(_blob(STOOL, u + tw / 2 + 0.45, v, 0.25))
    side = f.on_wall(sofa + extras, along=(0.3, 0.7)) or f.on_wall([(SOFA, 0, 0, 1.6, 0.85, 0.15)], along=(0.3, 0.7))
    if side is None:
        return
    f.on_wall([(CABINET, 0, 0, rng.uniform(1.4, 2.2), 0.45, 0)], [OPPOSITE[side]], along=(0.3, 0.7))  # the TV
    across = [s for s in SIDES if s not in (side, OPPOSITE[side])]
    for _ in range(int(rng.integers(0, 3))):
        f.on_wall([(SOFA if rng.random() < 0.4 else CHAIR, 0, 0, 0.8, 0.8, 0.15)], across, (0.3, 0.7), gap=0.25)
    if rng.random() < 0.08:
        f.on_wall([_blob(OTHERS, 0.2, 0.2, 0.2)], along=(0.0, 0.05), gap=0.1)


def _dining(f: Furnisher) -> None:
    """A table in the middle, chairs along its long sides (a round table for four now and then), a
    pendant lamp over it; a sideboard against a wall."""
    rng, (x0, y0, x1, y1) = f.rng, f.area
    cx, cy = (x0 + x1) / 2 + rng.uniform(-0.2, 0.2), (y0 + y1) / 2 + rng.uniform(-0.2, 0.2)
    side = "top" if x1 - x0 >= y1 - y0 else "left"  # the table's long side along the room's
    h, width, round_table, lamp = rng.uniform(0.22, 0.26), rng.uniform(0.8, 0.9), rng.random() < 0.3, rng.random() < 0.5
    for per_side in (int(rng.choice([2, 3, 3, 4])), 2, 1):
        length, depth = 0.25 + 0.55 * per_side, 2 * h + 0.64 + width
        inset = (length - width) / 2 if round_table and per_side <= 2 else 0  # a round table is as long as wide
        pieces = [(TABLE, inset, h + 0.32, length - inset, h + 0.32 + width, ROUND if inset else 0)]
        for k in range(per_side):
            u = (k + 0.5) / per_side * length
            pieces += [(CHAIR, u - h, v, u + h, v + 2 * h, 0.07) for v in (0, depth - 2 * h)]
        pieces += [_blob(LAMP, length / 2, depth / 2, 0.17)] if lamp else []
        origin = (cx - length / 2, cy - depth / 2) if side == "top" else (cx - depth / 2, cy - length / 2)
        if f.put(pieces, origin, side):
            f.on_wall([(CABINET, 0, 0, rng.uniform(1.0, 1.8), 0.45, 0)])
            return


def _living(f: Furnisher) -> None:
    """A living room; a large one is a living-dining room: a lounge at one end, a dining set at the other."""
    rng, (x0, y0, x1, y1) = f.rng, f.area
    if (x1 - x0) * (y1 - y0) <= 18 or max(x1 - x0, y1 - y0) <= 4.5 or rng.random() < 0.15:
        return _lounge(f)
    t = rng.uniform(0.52, 0.62)  # where the two ends meet, along the longer side
    if x1 - x0 >= y1 - y0:
        ends = (x0, y0, x0 + t * (x1 - x0), y1), (x0 + t * (x1 - x0), y0, x1, y1)
    else:
        ends = (x0, y0, x1, y0 + t * (y1 - y0)), (x0, y0 + t * (y1 - y0), x1, y1)
    lounge, dining = ends if rng.random() < 0.5 else ends[::-1]
    _lounge(replace(f, area=lounge))  # the same room's furniture, placed into one end
    _dining(replace(f, area=dining))


FURNISHED = (_bedroom,) * 5 + (_study, _dining)  # the kinds of furnished room but the largest, the living room


@dataclass(frozen=True)
class Room:
    room_id: str
    rect: Rect
    furniture: tuple[Shape, ...]
    framing: tuple[float, float, float]  # in its own layout (Camera.framing)


@dataclass(frozen=True)
class Apartment:
    rooms: tuple[Room, ...]
    doors: tuple[Rect, ...]  # gaps, each a stretch (x0, y0, x1, y1) of a wall
    framing: tuple[float, float, float]  # in the scene layout
    extent: Rect


def _walls(rect: Rect) -> list[Rect]:
    x0, y0, x1, y1 = rect
    return [(x0, y0, x1, y0), (x0, y1, x1, y1), (x0, y0, x0, y1), (x1, y0, x1, y1)]


def _partition(width: float, height: float, rooms: int, rng: np.random.Generator) -> list[Rect]:
    """Cut the flat into ``rooms`` rectangles: a larger part is likelier to be cut, mostly across its
    longer side, never into a room narrower than MIN_ROOM_SIDE. Rooms meet on equal floats."""
    parts = [(0.0, 0.0, width, height)]
    for _ in range(40 * rooms):
        if len(parts) == rooms:
            break
        areas = np.array([(r[2] - r[0]) * (r[3] - r[1]) for r in parts])
        k = int(rng.choice(len(parts), p=areas / areas.sum()))
        x0, y0, x1, y1 = parts[k]
        across_x = (x1 - x0 >= y1 - y0) == (rng.random() < 0.85)
        length = x1 - x0 if across_x else y1 - y0
        cut = rng.uniform(0.3, 0.7) * length
        if min(cut, length - cut) < MIN_ROOM_SIDE:
            continue
        if across_x:
            parts[k : k + 1] = [(x0, y0, x0 + cut, y1), (x0 + cut, y0, x1, y1)]
        else:
            parts[k : k + 1] = [(x0, y0, x1, y0 + cut), (x0, y0 + cut, x1, y1)]
    return parts


def _door(wall: Rect, width: float, rng: np.random.Generator) -> Rect:
    """A gap ``width`` long in ``wall``, at least 0.2 m from either end."""
    x0, y0, x1, y1 = wall
    width = min(width, x1 - x0 + y1 - y0 - 0.4)
    start = rng.uniform(0.2, x1 - x0 + y1 - y0 - width - 0.2)
    return (x0 + start, y0, x0 + start + width, y1) if y0 == y1 else (x0, y0 + start, x1, y0 + start + width)


def _shared_wall(a: Rect, b: Rect) -> Rect | None:
    """The stretch of wall between two rooms, where it is long enough for a door."""
    for lo, hi in ((a, b), (b, a)):
        if lo[2] == hi[0] and min(lo[3], hi[3]) - max(lo[1], hi[1]) > 1.2:
            return lo[2], max(lo[1], hi[1]), lo[2], min(lo[3], hi[3])
        if lo[3] == hi[1] and min(lo[2], hi[2]) - max(lo[0], hi[0]) > 1.2:
            return max(lo[0], hi[0]), lo[3], min(lo[2], hi[2]), lo[3]
    return None


def _doors(rects: list[Rect], first: int, extent: Rect, rng: np.random.Generator) -> list[Rect]:
    """A door in each wall of a random tree joining every room to room ``first``, in a few more shared
    walls, and an entrance in an outer wall."""
    n = len(rects)
    walls = {(i, j): w for i in range(n) for j in range(i + 1, n) if (w := _shared_wall(rects[i], rects[j]))}
    reached, frontier, doors = {first}, [first], []
    while frontier:
        i = frontier.pop(int(rng.integers(len(frontier))))
        for j in rng.permutation(n).tolist():
            if j not in reached and (wall := walls.pop((min(i, j), max(i, j)), None)):
                reached.add(j)
                frontier.append(j)
                doors.append(_door(wall, rng.uniform(0.8, 0.95), rng))
    doors += [_door(wall, rng.uniform(0.8, 0.95), rng) for wall in walls.values() if rng.random() < 0.2]
    outer = [
        wall
        for r in rects
        for wall, out in zip(_walls(r), (r[1] == extent[1], r[3] == extent[3], r[0] == extent[0], r[2] == extent[2]))
        if out and wall[2] - wall[0] + wall[3] - wall[1] > 1.5
    ]
    return doors + [_door(outer[int(rng.integers(len(outer)))], 1.0, rng)]


def apartment_plan(number: int, seed: int = 0) -> Apartment:
    """Apartment ``number`` of the sequence drawn from ``seed``, in metres (deterministic)."""
    rng = np.random.default_rng([seed, number])
    n = int(np.clip(3 + rng.poisson(3.35), 3, 12))
    area, aspect = n * rng.uniform(10.0, 16.0), rng.uniform(1.0, 1.4)
    width, height = math.sqrt(area * aspect), math.sqrt(area / aspect)
    if rng.random() < 0.4:
        width, height = height, width
    l_shaped = n >= 5 and rng.random() < 0.3
    rects = _partition(width, height, n + l_shaped, rng)
    if l_shaped:  # leave out a corner room spanning neither side: the rooms along it keep the extent
        at_corner = [r for r in rects if (r[0] == 0 or r[2] == width) and (r[1] == 0 or r[3] == height)]
        corners = [r for r in at_corner if r[2] - r[0] < width and r[3] - r[1] < height]
        if corners and len(rects) > 3:
            rects.remove(min(corners, key=lambda r: (r[2] - r[0]) * (r[3] - r[1])))
    share = 0.0 if rng.random() < EMPTY_APARTMENT_SHARE else rng.uniform(*FURNISHED_ROOM_SHARE)
    furnished = max(1, round(len(rects) * share)) if share else 0  # the largest rooms, where wide enough
    by_size = sorted(range(len(rects)), key=lambda i: -(rects[i][2] - rects[i][0]) * (rects[i][3] - rects[i][1]))
    ids = rng.choice(9000, size=len(rects), replace=False) + 1000
    rooms = []
    for i, (x0, y0, x1, y1) in enumerate(rects):
        f = Furnisher((x0 + CLEARANCE, y0 + CLEARANCE, x1 - CLEARANCE, y1 - CLEARANCE), rng)
        if by_size.index(i) < furnished and min(x1 - x0, y1 - y0) >= FURNISHABLE_SIDE:
            (_living if i == by_size[0] else FURNISHED[int(rng.integers(len(FURNISHED)))])(f)
            if rng.random() < 0.4:  # a ceiling lamp, over whatever is below
                cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, rng.uniform(0.18, 0.26)
                f.shapes.append(((cx - r, cy - r, cx + r, cy + r), LAMP, ROUND))
        framing = (rng.uniform(0.84, 0.96), rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6))
        rooms.append(Room(str(ids[i]), rects[i], tuple(f.shapes), framing))
    extent = (0.0, 0.0, width, height)
    doors = _doors(rects, by_size[0], extent, rng)
    framing = (rng.uniform(0.76, 0.94), rng.uniform(0, 1), rng.uniform(0, 1))  # scenes often off-centre
    return Apartment(tuple(rooms), tuple(doors), framing, extent)


@dataclass(frozen=True)
class Camera:
    """Metres to pixels on a ``resolution``-pixel square: pixel = (x, y) + metres * scale."""

    scale: float
    x: float
    y: float
    resolution: int

    @classmethod
    def framing(cls, rect: Rect, framing: tuple[float, float, float], resolution: int) -> Camera:
        """``rect``'s longer side spans ``fill`` of the frame, at (ox, oy) (0-1) of the room left around it."""
        fill, ox, oy = framing
        w, h = rect[2] - rect[0], rect[3] - rect[1]
        scale = fill * resolution / max(w, h)
        x, y = ox * (resolution - w * scale) - rect[0] * scale, oy * (resolution - h * scale) - rect[1] * scale
        return cls(scale, x, y, resolution)

    def box(self, rect: Rect) -> Rect:
        """A rectangle's pixels, ends exclusive."""
        x0, y0, x1, y1 = rect
        s = self.scale
        return round(self.x + x0 * s), round(self.y + y0 * s), round(self.x + x1 * s), round(self.y + y1 * s)

    def stroke(self, rect: Rect) -> Rect:
        """The pixels of ``rect`` with the wall stroke on its edges (of a wall: the stroke), ends exclusive."""
        w = max(1, int(self.resolution * WALL_PX_AT_512 / 512 + 0.5))  # 6 px at 512, never under 1
        x0, y0, x1, y1 = self.box(rect)
        return x0 - w // 2, y0 - w // 2, x1 - w // 2 + w, y1 - w // 2 + w


def _fill(pen: ImageDraw.ImageDraw, box: Rect, value: int, corner: float = 0.0) -> None:
    """Fill a box of pixels (ends exclusive, clipped to the frame), its corners rounded ``corner`` px."""
    x0, y0, x1, y1 = box
    corner = int(min(corner, (x1 - x0 - 1) / 2, (y1 - y0 - 1) / 2))
    if corner > 0:
        pen.rounded_rectangle((x0, y0, x1 - 1, y1 - 1), corner, fill=value)
    elif x1 > x0 and y1 > y0:  # else under a pixel at this resolution
        pen.rectangle((x0, y0, x1 - 1, y1 - 1), fill=value)


def draw(apartment: Apartment, camera: Camera, only: Room | None = None) -> np.ndarray:
    """The apartment's class map seen through ``camera``: furniture, then the walls over it, then the
    door gaps; with ``only``, that room and its walls alone on the canvas (its crop of the scene)."""
    image = Image.new("L", (camera.resolution,) * 2, BACKGROUND)
    pen = ImageDraw.Draw(image)
    for room in apartment.rooms:
        for box, cls, radius in room.furniture if only is None or only is room else ():
            _fill(pen, camera.box(box), cls, radius * camera.scale)
    for room in apartment.rooms:
        for wall in _walls(room.rect):
            _fill(pen, camera.stroke(wall), WALL)
    for door in apartment.doors:  # the door's length, through the stroke's whole thickness
        (x0, y0, x1, y1), (sx0, sy0, sx1, sy1) = camera.box(door), camera.stroke(door)
        _fill(pen, (x0, sy0, x1, sy1) if door[1] == door[3] else (sx0, y0, sx1, y1), BACKGROUND)
    class_map = np.array(image)
    if only is None:
        return class_map
    x0, y0, x1, y1 = (max(v, 0) for v in camera.stroke(only.rect))
    crop = np.full_like(class_map, BACKGROUND)
    crop[y0:y1, x0:x1] = class_map[y0:y1, x0:x1]
    return crop


@dataclass(frozen=True)
class SyntheticLayout:
    scene_id: str
    type: str  # "scene" or "room"
    room_id: str  # "scene" for a scene layout
    is_empty: bool  # no furniture pixel: walls and background only
    class_map: np.ndarray  # uint8 (resolution, resolution)
    scene_box: Rect | None = None  # a room's pixels in its scene's layout, walls included (ends exclusive)

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(class_to_rgb(self.class_map), "RGB")


def _empty(class_map: np.ndarray) -> bool:
    return not np.isin(class_map, (WALL, BACKGROUND), invert=True).any()


def apartment_layouts(apartment: Apartment, scene_id: str, resolution: int) -> Iterator[SyntheticLayout]:
    """The apartment's scene layout, then each room's layout (its crop of the scene)."""
    camera = Camera.framing(apartment.extent, apartment.framing, resolution)
    scene = draw(apartment, camera)
    yield SyntheticLayout(scene_id, "scene", "scene", _empty(scene), scene)
    for room in apartment.rooms:
        crop = draw(apartment, Camera.framing(room.rect, room.framing, resolution), only=room)
        box = tuple(min(max(v, 0), resolution) for v in camera.stroke(room.rect))
        yield SyntheticLayout(scene_id, "room", room.room_id, _empty(crop), crop, box)


def _apartments(seed: int) -> Iterator[tuple[str, Apartment]]:
    """Each apartment's scene id and plan, in order: apartment ``k`` drawn from (seed, k), but one in
    1 / COPY_SHARE (at a phase drawn from the seed) an earlier one again under a new scene id."""
    phase, originals = np.random.default_rng([seed]).random(), []
    for number in itertools.count():
        if originals and math.floor((number + 1) * COPY_SHARE + phase) > math.floor(number * COPY_SHARE + phase):
            drawn = originals[int(np.random.default_rng([seed, number, 2]).integers(len(originals)))]
        else:
            drawn = number
            originals.append(number)
        ids = np.random.default_rng([seed, number, 1])
        yield f"{ids.integers(0, 16**8):08x}-{ids.integers(0, 16**4):04x}", apartment_plan(drawn, seed)


def synthetic_layouts(samples: int, resolution: int = 512, seed: int = 0) -> Iterator[SyntheticLayout]:
    """The set's first ``samples`` layouts in manifest order: each apartment's scene, then its rooms."""
    every = (layout for scene_id, plan in _apartments(seed) for layout in apartment_layouts(plan, scene_id, resolution))
    return itertools.islice(every, samples)


def generate_layouts(out_dir: str | Path, samples: int, resolution: int = 512, seed: int = 0) -> Path:
    """Write ``samples`` layouts as PNGs under ``out_dir/images`` and ``out_dir/layouts.csv`` in
    the real manifest format (relative paths). Returns the manifest path.

    An existing complete set in ``out_dir`` is reused; concurrent jobs share one copy, which
    appears whole or not at all (``files.build_folder``).
    """
    manifest = Path(out_dir) / "layouts.csv"
    if not manifest.is_file():
        build_folder(Path(out_dir), manifest.is_file, lambda staging: _write_set(staging, samples, resolution, seed))
    return manifest


def _write_set(folder: Path, samples: int, resolution: int, seed: int) -> None:
    (folder / "images").mkdir()
    rows = []
    for index, layout in enumerate(synthetic_layouts(samples, resolution, seed)):
        name = f"{index:06d}_{layout.scene_id}_{layout.room_id}.png"
        layout.image.save(folder / "images" / name, format="PNG", optimize=False)
        rows.append([layout.scene_id, layout.type, layout.room_id, f"images/{name}", str(layout.is_empty).lower()])
    write_text_atomic(folder / "layouts.csv", csv_text(COLUMNS, rows))
