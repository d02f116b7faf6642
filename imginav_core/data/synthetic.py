"""Synthetic top-down layouts: the embedded default dataset for anyone without the real renders.

Each image is drawn like the real ones (reference.md): a light-grey canvas, 200-grey walls a
few pixels thick with door gaps, furniture as filled rectangles and rounded blobs in the class
colours. Room layouts show one furnished room filling much of the canvas; scene layouts show a
whole apartment of several rooms, smaller and off-centre. A share of layouts is empty (walls
only), as in the real data. Drawing is aliased, so every pixel is a palette colour.

Everything is measured in metres and scaled to pixels at the end, so any resolution works, and
layout ``i`` depends only on ``(seed, i)``: the first 100 layouts of a 1,000-layout set are the
same 100 layouts as a 100-layout set.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import file_lock, write_text_atomic
from ..palette import CLASS_NAMES, PALETTE
from .manifest import COLUMNS

COLOUR = {name: tuple(int(c) for c in PALETTE[i]) for i, name in enumerate(CLASS_NAMES)}
BED, CABINET, CHAIR, LAMP, OTHERS, STOOL, SOFA, TABLE, WALL, BACKGROUND = (COLOUR[n] for n in CLASS_NAMES)

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 in metres


@dataclass
class Canvas:
    """Draws metre coordinates onto a square image of ``resolution`` pixels."""

    draw: ImageDraw.ImageDraw
    resolution: int
    scale: float  # pixels per metre
    origin: tuple[float, float]  # pixel position of (0, 0) metres

    def px(self, x: float, y: float) -> tuple[float, float]:
        return self.origin[0] + x * self.scale, self.origin[1] + y * self.scale

    def _box(self, rect: Rect) -> tuple[int, int, int, int] | None:
        (x0, y0), (x1, y1) = self.px(rect[0], rect[1]), self.px(rect[2], rect[3])
        box = round(min(x0, x1)), round(min(y0, y1)), round(max(x0, x1)) - 1, round(max(y0, y1)) - 1
        return box if box[2] >= box[0] and box[3] >= box[1] else None

    def rect(self, rect: Rect, colour: tuple[int, int, int]) -> None:
        box = self._box(rect)
        if box:
            self.draw.rectangle(box, fill=colour)

    def rounded(self, rect: Rect, colour: tuple[int, int, int], radius_m: float) -> None:
        box = self._box(rect)
        if box:
            radius = int(radius_m * self.scale)
            if radius >= 2 and min(box[2] - box[0], box[3] - box[1]) > 2 * radius:
                self.draw.rounded_rectangle(box, radius=radius, fill=colour)
            else:
                self.draw.rectangle(box, fill=colour)

    def blob(self, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
        box = self._box((cx - r, cy - r, cx + r, cy + r))
        if box:
            self.draw.ellipse(box, fill=colour)


# ---- furniture ---------------------------------------------------------------------------


def _against(room: Rect, side: str, along: float, width: float, depth: float, gap: float = 0.05) -> Rect:
    """A ``width`` x ``depth`` item with its back to wall ``side``, ``along`` in [0, 1] of the wall."""
    x0, y0, x1, y1 = room
    if side in ("top", "bottom"):
        cx = x0 + width / 2 + along * max(0.0, (x1 - x0) - width)
        y = y0 + gap if side == "top" else y1 - gap - depth
        return (cx - width / 2, y, cx + width / 2, y + depth)
    cy = y0 + width / 2 + along * max(0.0, (y1 - y0) - width)
    x = x0 + gap if side == "left" else x1 - gap - depth
    return (x, cy - width / 2, x + depth, cy + width / 2)


OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
SIDES = ("top", "bottom", "left", "right")


def _fits(room: Rect, item: Rect) -> bool:
    return item[0] >= room[0] and item[1] >= room[1] and item[2] <= room[2] and item[3] <= room[3]


def _bedroom(c: Canvas, room: Rect, rng: np.random.Generator) -> None:
    side = str(rng.choice(SIDES))
    double = rng.random() < 0.7
    bed = _against(room, side, rng.uniform(0.3, 0.7), 1.6 if double else 0.95, 2.0)
    if not _fits(room, bed):
        bed = _against(room, side, 0.5, 0.9, 1.8)
    c.rect(bed, BED)
    # night-stands beside the head of the bed, a lamp on some of them
    for offset in (-1, 1):
        if rng.random() < 0.85:
            horizontal = side in ("top", "bottom")
            w = 0.45
            if horizontal:
                x = bed[0] - 0.05 - w if offset < 0 else bed[2] + 0.05
                y = bed[1] if side == "top" else bed[3] - w
                stand = (x, y, x + w, y + w)
            else:
                y = bed[1] - 0.05 - w if offset < 0 else bed[3] + 0.05
                x = bed[0] if side == "left" else bed[2] - w
                stand = (x, y, x + w, y + w)
            if _fits(room, stand):
                c.rect(stand, CABINET)
                if rng.random() < 0.6:
                    c.blob((stand[0] + stand[2]) / 2, (stand[1] + stand[3]) / 2, 0.13, LAMP)
    other = str(rng.choice([s for s in SIDES if s != side]))
    wardrobe = _against(room, other, rng.uniform(0, 1), rng.uniform(1.2, 2.4), 0.6)
    if _fits(room, wardrobe):
        c.rect(wardrobe, CABINET)
    if rng.random() < 0.4:
        _desk(c, room, rng, avoid=(side, other))


def _desk(c: Canvas, room: Rect, rng: np.random.Generator, avoid: tuple[str, ...] = ()) -> None:
    side = str(rng.choice([s for s in SIDES if s not in avoid] or SIDES))
    desk = _against(room, side, rng.uniform(0, 1), 1.2, 0.6)
    if not _fits(room, desk):
        return
    c.rect(desk, CABINET)
    cx, cy = (desk[0] + desk[2]) / 2, (desk[1] + desk[3]) / 2
    dx, dy = {"top": (0, 0.55), "bottom": (0, -0.55), "left": (0.55, 0), "right": (-0.55, 0)}[side]
    c.rounded((cx + dx - 0.24, cy + dy - 0.24, cx + dx + 0.24, cy + dy + 0.24), CHAIR, 0.08)
    if rng.random() < 0.5:
        c.blob(
            desk[0] + 0.2 if side in ("top", "bottom") else cx,
            desk[1] + 0.2 if side in ("left", "right") else cy,
            0.12,
            LAMP,
        )


def _living(c: Canvas, room: Rect, rng: np.random.Generator) -> None:
    side = str(rng.choice(SIDES))
    sofa = _against(room, side, rng.uniform(0.3, 0.7), rng.uniform(1.8, 2.6), 0.9)
    if not _fits(room, sofa):
        sofa = _against(room, side, 0.5, 1.6, 0.8)
    c.rounded(sofa, SOFA, 0.15)
    horizontal = side in ("top", "bottom")
    cx, cy = (sofa[0] + sofa[2]) / 2, (sofa[1] + sofa[3]) / 2
    step = 1.0 if side in ("top", "left") else -1.0
    # coffee table in front of the sofa, TV cabinet on the opposite wall
    if horizontal:
        ty = (sofa[3] + 0.4) if step > 0 else (sofa[1] - 0.4 - 0.55)
        table = (cx - 0.55, ty, cx + 0.55, ty + 0.55)
    else:
        tx = (sofa[2] + 0.4) if step > 0 else (sofa[0] - 0.4 - 0.55)
        table = (tx, cy - 0.55, tx + 0.55, cy + 0.55)
    if _fits(room, table):
        c.rect(table, TABLE)
    tv = _against(room, OPPOSITE[side], 0.5, rng.uniform(1.2, 2.0), 0.45)
    if _fits(room, tv):
        c.rect(tv, CABINET)
    for _ in range(int(rng.integers(0, 3))):
        chair_side = str(rng.choice([s for s in SIDES if s not in (side, OPPOSITE[side])]))
        arm = _against(room, chair_side, rng.uniform(0.3, 0.7), 0.8, 0.8, gap=0.3)
        if _fits(room, arm):
            c.rounded(arm, SOFA if rng.random() < 0.5 else CHAIR, 0.15)
    corner_x = room[0] + 0.35 if rng.random() < 0.5 else room[2] - 0.35
    corner_y = room[1] + 0.35 if rng.random() < 0.5 else room[3] - 0.35
    c.blob(corner_x, corner_y, 0.2, LAMP if rng.random() < 0.6 else OTHERS)
    if rng.random() < 0.5:
        x, y = rng.uniform(room[0] + 0.4, room[2] - 0.4), rng.uniform(room[1] + 0.4, room[3] - 0.4)
        c.blob(x, y, 0.22, STOOL if rng.random() < 0.5 else OTHERS)


def _dining(c: Canvas, room: Rect, rng: np.random.Generator) -> None:
    cx = (room[0] + room[2]) / 2 + rng.uniform(-0.3, 0.3)
    cy = (room[1] + room[3]) / 2 + rng.uniform(-0.3, 0.3)
    seats = int(rng.choice([2, 4, 6]))
    length = 0.7 + 0.5 * (seats // 2)
    horizontal = rng.random() < 0.5
    w, h = (length, 0.9) if horizontal else (0.9, length)
    table = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    if not _fits(room, (table[0] - 0.6, table[1] - 0.6, table[2] + 0.6, table[3] + 0.6)):
        table = (cx - 0.45, cy - 0.45, cx + 0.45, cy + 0.45)
        w, h, seats, horizontal = 0.9, 0.9, 2, True
    round_table = rng.random() < 0.3 and seats <= 4
    if round_table:
        c.blob(cx, cy, min(w, h) / 2 + 0.1, TABLE)
    else:
        c.rect(table, TABLE)
    per_side = max(1, seats // 2)
    for k in range(per_side):
        t = (k + 0.5) / per_side
        for sign in (-1, 1):
            if horizontal:
                x = table[0] + t * w
                y = (table[1] - 0.3) if sign < 0 else (table[3] + 0.3)
            else:
                y = table[1] + t * h
                x = (table[0] - 0.3) if sign < 0 else (table[2] + 0.3)
            c.rounded((x - 0.22, y - 0.22, x + 0.22, y + 0.22), CHAIR, 0.07)
    side = str(rng.choice(SIDES))
    sideboard = _against(room, side, rng.uniform(0, 1), rng.uniform(1.0, 1.8), 0.45)
    if _fits(room, sideboard):
        c.rect(sideboard, CABINET)
    if rng.random() < 0.4:
        c.blob(cx, cy, 0.15, LAMP)


def _kitchen(c: Canvas, room: Rect, rng: np.random.Generator) -> None:
    first = str(rng.choice(SIDES))
    run = _against(
        room, first, 0.0, (room[2] - room[0]) if first in ("top", "bottom") else (room[3] - room[1]), 0.6, gap=0.0
    )
    c.rect(run, CABINET)
    if rng.random() < 0.6:
        second = str(rng.choice([s for s in SIDES if s not in (first, OPPOSITE[first])]))
        c.rect(_against(room, second, 0.0, rng.uniform(1.2, 2.2), 0.6, gap=0.0), CABINET)
    fridge = _against(room, OPPOSITE[first], rng.uniform(0, 1), 0.7, 0.7, gap=0.0)
    if _fits(room, fridge):
        c.rect(fridge, OTHERS)
    if rng.random() < 0.4 and min(room[2] - room[0], room[3] - room[1]) > 2.6:
        _dining(c, room, rng)


def _bathroom(c: Canvas, room: Rect, rng: np.random.Generator) -> None:
    sides = list(rng.permutation(SIDES))
    toilet = _against(room, sides[0], rng.uniform(0, 1), 0.4, 0.65)
    if _fits(room, toilet):
        c.rounded(toilet, OTHERS, 0.12)
    sink = _against(room, sides[1], rng.uniform(0, 1), 0.6, 0.45)
    if _fits(room, sink):
        c.rect(sink, CABINET)
    if rng.random() < 0.6:
        tub = _against(room, sides[2], 0.0, 1.6, 0.75)
        if _fits(room, tub):
            c.rounded(tub, OTHERS, 0.2)


def _study(c: Canvas, room: Rect, rng: np.random.Generator) -> None:
    _desk(c, room, rng)
    shelf = _against(room, str(rng.choice(SIDES)), rng.uniform(0, 1), rng.uniform(1.0, 2.0), 0.4)
    if _fits(room, shelf):
        c.rect(shelf, CABINET)
    if rng.random() < 0.5:
        c.rounded(_against(room, str(rng.choice(SIDES)), rng.uniform(0, 1), 1.8, 0.85, gap=0.3), SOFA, 0.15)


FURNISH = {
    "bedroom": _bedroom,
    "living": _living,
    "dining": _dining,
    "kitchen": _kitchen,
    "bathroom": _bathroom,
    "study": _study,
}


# ---- walls ---------------------------------------------------------------------------------


def _walls(c: Canvas, room: Rect, thickness: float) -> None:
    x0, y0, x1, y1 = room
    t = thickness / 2
    for rect in (
        (x0 - t, y0 - t, x1 + t, y0 + t),
        (x0 - t, y1 - t, x1 + t, y1 + t),
        (x0 - t, y0 - t, x0 + t, y1 + t),
        (x1 - t, y0 - t, x1 + t, y1 + t),
    ):
        c.rect(rect, WALL)


def _door(
    c: Canvas,
    a: tuple[float, float],
    b: tuple[float, float],
    thickness: float,
    rng: np.random.Generator,
    width: float = 0.9,
) -> None:
    """Cut a door gap of ``width`` metres into the wall segment a-b (axis-aligned)."""
    length = abs(b[0] - a[0]) + abs(b[1] - a[1])
    if length < width + 0.4:
        return
    s = rng.uniform(0.2, length - width - 0.2)
    t = thickness / 2 + 0.01
    if a[1] == b[1]:
        x = min(a[0], b[0]) + s
        c.rect((x, a[1] - t, x + width, a[1] + t), BACKGROUND)
    else:
        y = min(a[1], b[1]) + s
        c.rect((a[0] - t, y, a[0] + t, y + width), BACKGROUND)


# ---- whole layouts -------------------------------------------------------------------------


def _canvas(
    resolution: int, extent: tuple[float, float], fill: float, rng: np.random.Generator, centred: bool
) -> tuple[Image.Image, Canvas]:
    image = Image.new("RGB", (resolution, resolution), BACKGROUND)
    scale = resolution * fill / max(extent)
    free_x = resolution - extent[0] * scale
    free_y = resolution - extent[1] * scale
    if centred:
        origin = (free_x / 2 + rng.uniform(-0.05, 0.05) * free_x, free_y / 2 + rng.uniform(-0.05, 0.05) * free_y)
    else:
        origin = (rng.uniform(0.1, 0.9) * free_x, rng.uniform(0.1, 0.9) * free_y)
    return image, Canvas(ImageDraw.Draw(image), resolution, scale, origin)


def render_room(resolution: int, rng: np.random.Generator, empty: bool = False) -> Image.Image:
    """One room filling much of the canvas, furnished by its kind (walls only when empty)."""
    kind = str(rng.choice(list(FURNISH), p=[0.32, 0.2, 0.1, 0.13, 0.12, 0.13]))
    w, h = rng.uniform(3.0, 6.0), rng.uniform(3.0, 6.0)
    if kind == "bathroom":
        w, h = rng.uniform(1.8, 3.0), rng.uniform(2.0, 3.2)
    image, c = _canvas(resolution, (w, h), rng.uniform(0.72, 0.92), rng, centred=True)
    room = (0.0, 0.0, w, h)
    thickness = 0.14
    if not empty:
        FURNISH[kind](c, room, rng)
    _walls(c, room, thickness)
    side = str(rng.choice(SIDES))
    corners = {"top": ((0, 0), (w, 0)), "bottom": ((0, h), (w, h)), "left": ((0, 0), (0, h)), "right": ((w, 0), (w, h))}
    _door(c, *corners[side], thickness, rng)
    if rng.random() < 0.3:
        _door(c, *corners[OPPOSITE[side]], thickness, rng)
    return image


def _split(rect: Rect, rooms: int, rng: np.random.Generator) -> list[Rect]:
    """Binary space partition of the apartment into ``rooms`` rectangles."""
    parts = [rect]
    while len(parts) < rooms:
        parts.sort(key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
        x0, y0, x1, y1 = parts.pop()
        t = rng.uniform(0.35, 0.65)
        if (x1 - x0) >= (y1 - y0):
            x = x0 + t * (x1 - x0)
            parts += [(x0, y0, x, y1), (x, y0, x1, y1)]
        else:
            y = y0 + t * (y1 - y0)
            parts += [(x0, y0, x1, y), (x0, y, x1, y1)]
    return parts


def render_scene(resolution: int, rng: np.random.Generator, empty: bool = False) -> Image.Image:
    """A whole apartment of several rooms, smaller and off-centre on the canvas."""
    W, H = rng.uniform(8.0, 16.0), rng.uniform(6.0, 12.0)
    image, c = _canvas(resolution, (W, H), rng.uniform(0.5, 0.85), rng, centred=False)
    rooms = _split((0.0, 0.0, W, H), int(rng.integers(3, 8)), rng)
    if rng.random() < 0.3 and len(rooms) > 3:  # an L-shaped flat: one corner room is not there
        rooms.sort(key=lambda r: r[0] + r[1])
        rooms.pop()
    rooms.sort(key=lambda r: -(r[2] - r[0]) * (r[3] - r[1]))
    kinds = ["living"] + ["bedroom", "kitchen", "bathroom", "bedroom", "study", "dining", "bathroom"]
    thickness = 0.16
    for room, kind in zip(rooms, kinds):
        if not empty:
            inner = (room[0] + 0.1, room[1] + 0.1, room[2] - 0.1, room[3] - 0.1)
            FURNISH["bathroom" if min(inner[2] - inner[0], inner[3] - inner[1]) < 2.2 else kind](c, inner, rng)
    for room in rooms:
        _walls(c, room, thickness)
    for i, a in enumerate(rooms):  # a door in every wall two rooms share
        for b in rooms[i + 1 :]:
            shared = _shared_wall(a, b)
            if shared:
                _door(c, *shared, thickness, rng, width=0.8)
    entrance = rooms[0]
    _door(c, (entrance[0], entrance[1]), (entrance[2], entrance[1]), thickness, rng, width=1.0)
    return image


def _shared_wall(a: Rect, b: Rect) -> tuple[tuple[float, float], tuple[float, float]] | None:
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


@dataclass(frozen=True)
class SyntheticLayout:
    scene_id: str
    type: str
    room_id: str
    is_empty: bool
    image: Image.Image


def synthetic_layout(
    index: int, resolution: int = 512, seed: int = 0, scene_share: float = 0.25, empty_share: float = 0.25
) -> SyntheticLayout:
    """Layout number ``index`` of the synthetic set with this seed (deterministic)."""
    rng = np.random.default_rng([seed, index])
    scene_id = f"{rng.integers(0, 16**8):08x}-{rng.integers(0, 16**4):04x}"
    is_scene = rng.random() < scene_share
    empty = rng.random() < empty_share
    image = (render_scene if is_scene else render_room)(resolution, rng, empty)
    room_id = "scene" if is_scene else f"{int(rng.integers(1000, 9999))}"
    return SyntheticLayout(scene_id, "scene" if is_scene else "room", room_id, empty, image)


def generate_layouts(
    out_dir: str | Path,
    samples: int,
    resolution: int = 512,
    seed: int = 0,
    scene_share: float = 0.25,
    empty_share: float = 0.25,
) -> Path:
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
        for index in range(samples):
            layout = synthetic_layout(index, resolution, seed, scene_share, empty_share)
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
