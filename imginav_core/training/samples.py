"""Sample grids: input | reconstruction | predicted segmentation, one layout per row."""

from __future__ import annotations

import numpy as np
import torch

from ..data.batches import CachedLayouts, to_model_inputs
from ..images import to_uint8
from ..palette import class_to_rgb


def pick_samples(layouts: CachedLayouts, per_type: int = 3) -> np.ndarray:
    """Positions of the first ``per_type`` rooms and scenes: the same layouts at every epoch."""
    types = layouts.types
    rooms = np.flatnonzero(types == 0)[:per_type]
    scenes = np.flatnonzero(types == 1)[:per_type]
    picked = np.concatenate([rooms, scenes])
    return picked if len(picked) else np.arange(min(len(layouts), 2 * per_type))


@torch.no_grad()
def comparison_grid(
    model: torch.nn.Module, layouts: CachedLayouts, positions: np.ndarray, device: torch.device
) -> np.ndarray:
    """(rows x H, 3 x W, 3) uint8: per row the input, its reconstruction, its predicted segmentation."""
    was_training = model.training
    model.eval()
    batch = layouts[positions]
    rgb, _, _ = to_model_inputs(batch, device)
    outputs = model(rgb)
    model.train(was_training)
    columns = [batch["rgb"].numpy(), to_uint8(outputs["rgb"]), class_to_rgb(outputs["segmentation"].argmax(1))]
    rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(len(positions))]
    # a 2-pixel dark separator keeps neighbouring light layouts apart
    sep = np.full((2, rows[0].shape[1], 3), 40, dtype=np.uint8)
    return np.concatenate([part for row in rows for part in (row, sep)][:-1], axis=0)
