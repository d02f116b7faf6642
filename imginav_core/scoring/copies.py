"""Copies of training layouts among generated ones, looked for in every training layout.

The Fréchet distance rewards copying, so copies are counted on their own, in class-map space (each
generated pixel its nearest palette colour), against the *whole* training set:

- exact copies: the class map's ``palette.class_map_hash`` is a training layout's (the split's
  definition of identical);
- near copies: at most ``threshold`` of the cells of a coarse grid (each cell its most common
  class, so that a few changed pixels change few cells) differ from the nearest training layout's.
  The threshold is the ``QUANTILE`` (5 %) of held-out real layouts' distances, so real layouts are
  near copies at about that rate (``heldout_near_copy_share``, the floor); a generator well above it
  copies.

The training layouts are kept as their grids and hashes only (about 22 MB for 20,000 layouts at any
resolution); the search is one matrix product of one-hot grids per chunk, on any device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..palette import NUM_CLASSES, class_map_hash
from .pixels import BATCH_PIXELS, nearest_palette

GRID = 32  # cells per side of the coarse grid (at most: the largest divisor of the resolution up to it)
QUANTILE = 0.05  # of the held-out layouts' nearest distances: the near-copy threshold
EMPTY_CELL = NUM_CLASSES  # a cell without a palette pixel (all off-palette), as its own category
_CATEGORIES = NUM_CLASSES + 1
TRAINING_CHUNK = 2048  # training grids per matrix product: 2048 x 1024 cells x 11 x 4 bytes = 92 MB
QUERY_CHUNK = 1024  # grids searched at once: their one-hot is 46 MB


def grid_for(resolution: int) -> int:
    """The coarse grid's side for ``resolution``: the largest divisor of it up to GRID."""
    return max(g for g in range(1, min(GRID, resolution) + 1) if resolution % g == 0)


def generated_class_maps(rgb) -> np.ndarray:
    """(M, R, R, 3) uint8 RGB layouts as (M, R, R) uint8 class maps: each pixel its nearest palette
    colour (a few layouts at a time: an off-palette pixel costs ~100 bytes of distances)."""
    rgb = np.asarray(rgb)
    out = np.empty(rgb.shape[:3], dtype=np.uint8)
    step = max(1, BATCH_PIXELS // (rgb.shape[1] * rgb.shape[2]))
    for start in range(0, len(rgb), step):
        nearest, _ = nearest_palette(rgb[start : start + step])
        out[start : start + step] = nearest.numpy()
    return out


def cell_modes(class_maps: np.ndarray, grid: int) -> np.ndarray:
    """(N, R, R) class maps -> (N, grid * grid) uint8: each cell's most common class among its
    palette pixels (the lowest class on a tie; ``IGNORE_INDEX`` pixels count for none; a cell
    with no palette pixel is ``EMPTY_CELL``)."""
    maps = np.asarray(class_maps)
    n, r = len(maps), maps.shape[-1]
    if maps.ndim != 3 or maps.shape[1] != r or r % grid:
        raise ValueError(f"expected (N, R, R) class maps with R a multiple of {grid}, got {maps.shape}")
    cells = maps.reshape(n, grid, r // grid, grid, r // grid)
    counts = np.stack([(cells == c).sum((2, 4), dtype=np.int32) for c in range(NUM_CLASSES)], axis=-1)
    modes = counts.argmax(-1).astype(np.uint8)
    modes[counts.max(-1) == 0] = EMPTY_CELL
    return modes.reshape(n, grid * grid)


def hashes_of(class_maps: np.ndarray) -> list[str]:
    return [class_map_hash(m) for m in class_maps]


def _one_hot(modes: torch.Tensor) -> torch.Tensor:
    return F.one_hot(modes.long(), _CATEGORIES).flatten(1).float()


@dataclass
class CopyIndex:
    """The training layouts as their hashes and coarse grids; ``calibrate`` sets the threshold."""

    hashes: frozenset[str]
    modes: torch.Tensor  # (N, grid * grid) uint8, on the CPU
    resolution: int
    grid: int
    threshold: float = math.nan  # share of cells: at most this far from a training layout is a near copy
    heldout: dict | None = None  # what real held-out layouts show: the floor of every share

    def __len__(self) -> int:
        return len(self.modes)

    @classmethod
    def build(cls, chunks: Iterable[tuple[np.ndarray, list[str]]], resolution: int) -> CopyIndex:
        """From the training layouts, a chunk at a time: (class maps (n, R, R) uint8, the hashes
        that identify them, any number: a layout may have more than one)."""
        grid = grid_for(resolution)
        hashes: set[str] = set()
        modes = []
        for class_maps, chunk_hashes in chunks:
            if class_maps.shape[1:] != (resolution, resolution):
                raise ValueError(f"training class maps of {class_maps.shape[1:]}; expected {resolution} x {resolution}")
            modes.append(torch.from_numpy(cell_modes(class_maps, grid)))
            hashes.update(chunk_hashes)
        if not modes:
            raise ValueError("no training layouts to look copies up in")
        return cls(frozenset(hashes), torch.cat(modes), resolution, grid)

    def lookup(self, class_maps: np.ndarray, hashes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For (M, R, R) class maps: whether each is an exact copy (its hash among the training
        layouts'), and its coarse grid (M, grid * grid) for ``nearest``."""
        hashes = hashes_of(class_maps) if hashes is None else hashes
        return np.array([h in self.hashes for h in hashes], dtype=bool), cell_modes(class_maps, self.grid)

    def describe(self, class_maps: np.ndarray, hashes: list[str] | None = None, device=None) -> CopyDistances:
        """``lookup`` and ``nearest`` at once: exact copies and the distance to the nearest training layout."""
        exact, modes = self.lookup(class_maps, hashes)
        return CopyDistances(exact, self.nearest(modes, device))

    @torch.no_grad()
    def nearest(self, modes: np.ndarray, device=None) -> np.ndarray:
        """Each grid's share of cells differing from its nearest training layout: matching cells
        counted as one matrix product of one-hot grids, the training layouts a chunk at a time."""
        device = torch.device(device or "cpu")
        cells = self.modes.shape[1]
        queries = torch.from_numpy(np.asarray(modes))
        best = []
        for q in range(0, len(queries), QUERY_CHUNK):
            query = _one_hot(queries[q : q + QUERY_CHUNK].to(device))
            most = torch.zeros(len(query), device=device)
            for t in range(0, len(self.modes), TRAINING_CHUNK):
                matches = query @ _one_hot(self.modes[t : t + TRAINING_CHUNK].to(device)).T
                most = torch.maximum(most, matches.amax(1))
            best.append((1.0 - most / cells).cpu())
        return torch.cat(best).double().numpy() if best else np.zeros(0)

    def calibrate(self, heldout: CopyDistances) -> None:
        """The near-copy threshold from real held-out layouts' distances, and their shares (the floor)."""
        if len(heldout) < 2:
            raise ValueError(f"{len(heldout)} held-out layouts; the near-copy threshold needs at least 2")
        self.threshold = float(np.quantile(heldout.nearest, QUANTILE))
        self.heldout = {
            "heldout_layouts": len(heldout),
            "heldout_exact_copy_share": float(heldout.exact.mean()),
            "heldout_near_copy_share": float(np.mean(heldout.nearest <= self.threshold)),
            "heldout_median_distance": float(np.median(heldout.nearest)),
        }

    def summary(self, generated: CopyDistances) -> dict:
        """The JSON of one set of generated layouts: the shares of exact and near copies (with
        Wilson 95 % intervals), beside what held-out real layouts show."""
        if self.heldout is None:
            raise ValueError("the copy index is not calibrated: call calibrate() with held-out layouts first")
        n = len(generated)
        exact, near = int(generated.exact.sum()), int(np.sum(generated.nearest <= self.threshold))
        return {
            "exact_copy_share": exact / n,
            "exact_copy_ci95": wilson_interval(exact, n),
            "near_copy_share": near / n,
            "near_copy_ci95": wilson_interval(near, n),
            "near_copy_threshold": self.threshold,
            "median_distance": float(np.median(generated.nearest)),
            "generated": n,
            "training_layouts_searched": len(self),
            **self.heldout,
            "quantile": QUANTILE,
            "grid": [self.grid, self.grid],
            "distance": (
                f"share of the {self.grid} x {self.grid} cells whose most common class differs from the nearest "
                "training layout's; exact: the class map's hash is a training layout's"
            ),
        }


@dataclass
class CopyDistances:
    """Per layout: an exact copy of a training layout?, and the distance to the nearest one."""

    exact: np.ndarray  # (M,) bool
    nearest: np.ndarray  # (M,) float64, share of cells

    def __len__(self) -> int:
        return len(self.exact)

    @classmethod
    def join(cls, parts: list[CopyDistances]) -> CopyDistances:
        return cls(np.concatenate([p.exact for p in parts]), np.concatenate([p.nearest for p in parts]))


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> list[float]:
    """The Wilson score 95 % interval of a proportion (sound at 0 and at 1, unlike the normal one)."""
    if n == 0:
        return [math.nan, math.nan]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]
