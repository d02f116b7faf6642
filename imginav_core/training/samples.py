"""Sample grids: input | reconstruction | predicted segmentation, one layout per row, each tile
enlarged by a whole factor (nearest neighbour: every pixel a square of one colour) to at least
``MIN_TILE_PX`` pixels, so that a small run's 64-pixel layouts can be seen."""

from __future__ import annotations

import numpy as np
import torch

from ..data.batches import CachedLayouts, to_model_inputs
from ..images import to_uint8
from ..palette import class_to_rgb

MIN_TILE_PX = 256


def pick_samples(layouts: CachedLayouts, per_type: int = 3) -> np.ndarray:
    """Positions of the first ``per_type`` rooms and scenes: the same layouts at every epoch."""
    types = layouts.types
    rooms = np.flatnonzero(types == 0)[:per_type]
    scenes = np.flatnonzero(types == 1)[:per_type]
    picked = np.concatenate([rooms, scenes])
    return picked if len(picked) else np.arange(min(len(layouts), 2 * per_type))


def enlarge(images: np.ndarray, min_px: int = MIN_TILE_PX) -> np.ndarray:
    """(N, H, W, 3) images repeated pixel by pixel, by the smallest whole factor that makes them at
    least ``min_px`` high (1: as they are)."""
    factor = max(1, -(-min_px // images.shape[1]))
    return images.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else images


@torch.no_grad()
def comparison_grid(
    model: torch.nn.Module, layouts: CachedLayouts, positions: np.ndarray, device: torch.device
) -> np.ndarray:
    """(rows x H', 3 x W', 3) uint8, H' = H enlarged to ``MIN_TILE_PX`` at least: per row the input,
    its reconstruction, its predicted segmentation."""
    was_training = model.training
    model.eval()
    batch = layouts[positions]
    rgb, _, _ = to_model_inputs(batch, device)
    outputs = model(rgb)
    model.train(was_training)
    columns = [batch["rgb"].numpy(), to_uint8(outputs["rgb"]), class_to_rgb(outputs["segmentation"].argmax(1))]
    columns = [enlarge(c) for c in columns]
    rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(len(positions))]
    # a 2-pixel dark separator keeps neighbouring light layouts apart
    sep = np.full((2, rows[0].shape[1], 3), 40, dtype=np.uint8)
    return np.concatenate([part for row in rows for part in (row, sep)][:-1], axis=0)
