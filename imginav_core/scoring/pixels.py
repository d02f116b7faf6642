"""Per-image statistics read straight off the pixels: palette purity, class shares, speckle.

Each generated pixel is mapped to its nearest palette colour (a layout has no other colours, so
that is the class a renderer would draw). Speckle counts the connected regions of that class
map, 4-connected, that are too small to be furniture: what noise or a blurred edge leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..palette import IGNORE_INDEX, NUM_CLASSES, PALETTE, PURITY_TOLERANCE, rgb_to_class

BATCH = 64  # images per step: (64, 10, R, R) float distances stay ~170 MB at 256 x 256


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


def _runs_and_links(class_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(run id of every pixel (N, H, W), links between vertically touching runs of one class as
    two (K,) arrays). A run is a row's stretch of one class: within it every pixel is connected."""
    n, h, w = class_map.shape
    starts = torch.ones(n, h, w, dtype=torch.bool)
    starts[:, :, 1:] = class_map[:, :, 1:] != class_map[:, :, :-1]
    run = (torch.cumsum(starts.view(-1), 0) - 1).view(n, h, w)
    down = class_map[:, 1:, :] == class_map[:, :-1, :]
    top, bottom = run[:, :-1, :], run[:, 1:, :]
    # two runs touch along their whole overlap; one link per overlap is enough
    first = down.clone()
    first[:, :, 1:] &= ~(down[:, :, :-1] & (top[:, :, 1:] == top[:, :, :-1]) & (bottom[:, :, 1:] == bottom[:, :, :-1]))
    return run, top[first], bottom[first]


def _join(n_runs: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For every run, the smallest run id of its region, given links ``a[i] -- b[i]``.

    Label propagation with pointer jumping (as in Shiloach-Vishkin): each root hooks onto the
    smallest root any of its links reaches (always a smaller id, so no cycles), then every run
    jumps to its root; a few vectorised rounds.
    """
    label = torch.arange(n_runs)
    while True:
        la, lb = label[a], label[b]
        if torch.equal(la, lb):
            return label
        low = torch.minimum(la, lb)
        label.scatter_reduce_(0, la, low, reduce="amin")
        label.scatter_reduce_(0, lb, low, reduce="amin")
        while True:
            jumped = label[label]
            if torch.equal(jumped, label):
                break
            label = jumped


def label_components(class_map: torch.Tensor) -> torch.Tensor:
    """Connected regions of equal class, 4-connected, of an (N, H, W) integer map: each pixel gets
    its region's id (unique over the batch). Rows are cut into runs, the runs joined by
    ``_join``: no Python loop over pixels (scipy is not a dependency of the project)."""
    run, a, b = _runs_and_links(class_map)
    return _join(int(run.max()) + 1, a, b)[run]


def speckle_counts(class_map: torch.Tensor, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: (regions smaller than ``max_pixels``, all regions)."""
    n, h, w = class_map.shape
    run, a, b = _runs_and_links(class_map)
    n_runs = int(run.max()) + 1
    region = _join(n_runs, a, b)
    length = torch.bincount(run.view(-1), minlength=n_runs)
    size = torch.bincount(region, weights=length.double(), minlength=n_runs)
    root = region == torch.arange(n_runs)
    image = torch.arange(n).repeat_interleave(run[:, -1, -1] - run[:, 0, 0] + 1)  # runs are numbered image by image
    small = torch.bincount(image[root & (size < max_pixels)], minlength=n)
    total = torch.bincount(image[root], minlength=n)
    return small.numpy(), total.numpy()


@dataclass
class PixelStatistics:
    """Per-image numbers, (M,) or (M, 10), in the order of the images."""

    purity: np.ndarray  # share of pixels within PURITY_TOLERANCE of a palette colour
    shares: np.ndarray  # (M, 10) share of pixels per nearest palette class
    small_regions: np.ndarray  # connected class regions smaller than speckle_max_pixels
    regions: np.ndarray  # all connected class regions

    def __len__(self) -> int:
        return len(self.purity)


def pixel_statistics(rgb, tolerance: float = PURITY_TOLERANCE) -> PixelStatistics:
    """The statistics of (M, R, R, 3) uint8 RGB layouts (an array, or anything that slices into
    such arrays, as ``ReferenceSet.rgb_view()``), computed in batches."""
    side = rgb.shape[1]
    max_pixels = speckle_max_pixels(side)
    parts = []
    for start in range(0, len(rgb), BATCH):
        batch = np.asarray(rgb[start : start + BATCH])
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (side, side, 3):
            raise ValueError(f"expected (M, R, R, 3) uint8 RGB layouts, got {batch.dtype} {batch.shape}")
        nearest, distance = nearest_palette(batch)
        purity = (distance <= tolerance).float().flatten(1).mean(1).numpy()
        image = torch.arange(len(nearest)).view(-1, 1, 1)
        counts = torch.bincount((image * NUM_CLASSES + nearest).view(-1), minlength=len(nearest) * NUM_CLASSES)
        shares = (counts.view(-1, NUM_CLASSES).double() / nearest[0].numel()).numpy()
        small, total = speckle_counts(nearest, max_pixels)
        parts.append((purity, shares, small, total))
    return PixelStatistics(*(np.concatenate(column) for column in zip(*parts)))
