"""The 10-colour semantic palette of the layout images: the one place it is defined.

Every pixel's colour is its class. A pixel of any other colour (anti-aliasing, a corrupted
render) is not a class: it maps to ``IGNORE_INDEX``, which the segmentation loss skips.
All conversions are vectorised over whole arrays (any leading shape).
"""

from __future__ import annotations

import hashlib

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "bed",
    "cabinet/shelf/desk",
    "chair",
    "lighting",
    "others",
    "pier/stool",
    "sofa",
    "table",
    "wall",
    "background",
)

PALETTE = np.array(
    [
        (228, 26, 28),
        (55, 126, 184),
        (77, 175, 74),
        (152, 78, 163),
        (127, 127, 127),
        (255, 127, 0),
        (255, 255, 51),
        (166, 86, 40),
        (200, 200, 200),
        (240, 240, 240),
    ],
    dtype=np.uint8,
)
PALETTE.setflags(write=False)

NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255
# RGB distance (0-255 units) within which a pixel counts as a palette colour: the scorer's pixel
# statistics and the analysis's palette purity both judge "is this pixel a class colour" with it.
PURITY_TOLERANCE = 24.0
WALL = CLASS_NAMES.index("wall")
BACKGROUND = CLASS_NAMES.index("background")


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


# A 2**24-entry table (16 MiB) turns colour matching into one gather per pixel. It is built on
# first use, so importing the palette stays cheap.
_LOOKUP: np.ndarray | None = None


def _lookup_table() -> np.ndarray:
    global _LOOKUP
    if _LOOKUP is None:
        table = np.full(1 << 24, IGNORE_INDEX, dtype=np.uint8)
        table[_pack(PALETTE)] = np.arange(NUM_CLASSES, dtype=np.uint8)
        _LOOKUP = table
    return _LOOKUP


def rgb_to_class(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """Map an ``(..., 3)`` uint8 RGB array to a uint8 class map of shape ``(...)``.

    Returns ``(class_map, unknown)``: pixels whose colour is not in the palette become
    ``IGNORE_INDEX`` and ``unknown`` counts them.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected a uint8 array of shape (..., 3), got {rgb.dtype} {rgb.shape}")
    class_map = _lookup_table()[_pack(rgb)]
    unknown = int(np.count_nonzero(class_map == IGNORE_INDEX))
    return class_map, unknown


# The colour of every uint8 class index: the palette, then black (IGNORE_INDEX and the unused indices).
COLOURS = np.zeros((256, 3), dtype=np.uint8)
COLOURS[:NUM_CLASSES] = PALETTE
COLOURS.setflags(write=False)


def class_to_rgb(class_map) -> np.ndarray:
    """Map a class map of any shape to ``(..., 3)`` uint8 RGB; ``IGNORE_INDEX`` becomes black."""
    if hasattr(class_map, "detach"):  # a torch tensor (palette itself needs no torch)
        class_map = class_map.detach().cpu().numpy()
    return COLOURS[np.asarray(class_map, dtype=np.uint8)]


def class_map_hash(class_map: np.ndarray) -> str:
    """A layout's identity: a digest of its uint8 class map (shape and bytes). Two layouts with
    the same hash are the same layout, whatever file or scene they came from; the split groups
    them and the memorisation check looks generated layouts up by it. One function, so that the
    cache, the split and the probe agree on what "identical" means."""
    class_map = np.ascontiguousarray(class_map, dtype=np.uint8)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(class_map.shape).encode())
    digest.update(class_map.tobytes())
    return digest.hexdigest()
