"""Per-image statistics read straight off the pixels: palette purity, class shares, speckle.

Each generated pixel is mapped to its nearest palette colour (a layout has no other colours, so
that is the class a renderer would draw). Speckle counts the connected regions of that class
map, 4-connected, that are too small to be furniture: what noise or a blurred edge leaves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..palette import IGNORE_INDEX, NUM_CLASSES, PALETTE, PURITY_TOLERANCE, rgb_to_class

# Pixels per step: about 150 bytes of temporaries a pixel (class maps, distances, region labels),
# ~150 MB whatever the resolution: 64 layouts at 128 x 128 or less, 16 at 256, 4 at 512.
BATCH_PIXELS = 2**20
BATCH = 64


def speckle_max_pixels(resolution: int) -> int:
    """A region counts as speckle below this many pixels: R^2 / 1024 (a square of side R/32:
    4 pixels at 64 x 64, 16 at 128, 256 at 512), at least 2. Scaled with the area so that the
    same object on the floor plan counts the same at any resolution."""
    return max(2, round(resolution * resolution / 1024))


def nearest_palette(rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """For (N, R, R, 3) uint8 RGB: (nearest palette class (N, R, R) int64, its RGB distance (N, R, R))."""
    classes, unknown = rgb_to_class(rgb)  # exact palette colours by table lookup: all of a real layout
    nearest = torch.from_numpy(classes.astype(np.int64))
    distance = torch.zeros(classes.shape, dtype=torch.float32)
    if unknown:
        off = torch.from_numpy(classes == IGNORE_INDEX)
        pixels = torch.from_numpy(np.ascontiguousarray(rgb))[off].float()  # K, 3
        palette = torch.tensor(PALETTE, dtype=torch.float32)
        squared = (pixels.square().sum(1, keepdim=True) - 2 * pixels @ palette.T + palette.square().sum(1)).clamp_min(0)
        best, index = squared.min(1)
        nearest[off], distance[off] = index, best.sqrt()
    return nearest, distance


# 4-connected within an image, never across images: a 3-D structure whose only non-zero plane is the middle one.
_WITHIN_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_WITHIN_IMAGE[1] = ndimage.generate_binary_structure(2, 1)


def _regions_of_each_value(class_map) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each value of an (N, H, W) integer map: (its regions labelled 1..count, 0 elsewhere;
    the labels of its pixels in scan order; how many of its pixels each image has)."""
    maps = class_map.numpy() if isinstance(class_map, torch.Tensor) else np.asarray(class_map)
    n = len(maps)
    # the values present: a histogram for bytes (the class maps), far cheaper than sorting them
    present = np.flatnonzero(np.bincount(maps.ravel(), minlength=256)) if maps.dtype == np.uint8 else np.unique(maps)
    for value in present:
        mask = maps == value
        labels, _ = ndimage.label(mask, structure=_WITHIN_IMAGE)
        yield labels, labels[mask], mask.reshape(n, -1).sum(1)


def label_components(class_map) -> torch.Tensor:
    """Connected regions of equal class, 4-connected, of an (N, H, W) integer map (a tensor or an
    array): each pixel gets its region's id, unique over the batch."""
    out = np.zeros(tuple(class_map.shape), dtype=np.int64)
    offset = 0
    for labels, values, _ in _regions_of_each_value(class_map):
        inside = labels > 0
        out[inside] = labels[inside] + (offset - 1)
        offset += int(values.max())
    return torch.from_numpy(out)


def speckle_counts(class_map, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: (regions smaller than ``max_pixels``, all regions)."""
    n = len(class_map)
    small, total = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for _, values, pixels in _regions_of_each_value(class_map):
        size = np.bincount(values)
        size[0] = max_pixels  # label 0 is no region
        smaller = np.cumsum(size < max_pixels)  # smaller[k]: how many of regions 1..k are small
        # ndimage.label numbers regions in scan order and none spans two images, so image i holds
        # the labels (last label of the images before it, its own largest label].
        largest = np.zeros(n, dtype=np.int64)
        has = pixels > 0
        largest[has] = np.maximum.reduceat(values, (np.cumsum(pixels) - pixels)[has])
        last = np.maximum.accumulate(largest)
        before = np.concatenate([[0], last[:-1]])
        total += last - before
        small += smaller[last] - smaller[before]
    return small, total


@dataclass
class PixelStatistics:
    """Per-image numbers, (M,) or (M, 10), in the order of the images."""

    purity: np.ndarray  # share of pixels within PURITY_TOLERANCE of a palette colour
    shares: np.ndarray  # (M, 10) share of pixels per nearest palette class
    small_regions: np.ndarray  # connected class regions smaller than speckle_max_pixels
    regions: np.ndarray  # all connected class regions

    def __len__(self) -> int:
        return len(self.purity)

    @classmethod
    def join(cls, parts: list[PixelStatistics]) -> PixelStatistics:
        """The statistics of consecutive chunks of layouts, as one."""
        columns = ("purity", "shares", "small_regions", "regions")
        return cls(*(np.concatenate([getattr(p, column) for p in parts]) for column in columns))


def pixel_statistics(rgb) -> PixelStatistics:
    """The statistics of (M, R, R, 3) uint8 RGB layouts (an array, or anything that slices into
    such arrays, as ``ReferenceSet.rgb_view()``), computed in batches."""
    side = rgb.shape[1]
    max_pixels = speckle_max_pixels(side)
    step = max(1, min(BATCH, BATCH_PIXELS // (side * side)))
    parts = []
    for start in range(0, len(rgb), step):
        batch = np.asarray(rgb[start : start + step])
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (side, side, 3):
            raise ValueError(f"expected (M, R, R, 3) uint8 RGB layouts, got {batch.dtype} {batch.shape}")
        nearest, distance = nearest_palette(batch)
        purity = (distance <= PURITY_TOLERANCE).float().flatten(1).mean(1).numpy()
        image = torch.arange(len(nearest)).view(-1, 1, 1)
        counts = torch.bincount((image * NUM_CLASSES + nearest).view(-1), minlength=len(nearest) * NUM_CLASSES)
        shares = (counts.view(-1, NUM_CLASSES).double() / nearest[0].numel()).numpy()
        small, total = speckle_counts(nearest.to(torch.uint8), max_pixels)  # classes 0..9: bytes
        parts.append((purity, shares, small, total))
    return PixelStatistics.join([PixelStatistics(*part) for part in parts])
