"""The weighted loss terms of Phase 1.2, each returned raw and weighted.

Targets are explicit tensors (no guessing from strings or RGB at each step):
``rgb`` float in [-1, 1] (B, 3, H, W); ``class_map`` int64 (B, H, W) with ``IGNORE_INDEX``
for off-palette pixels; ``label`` int64 (B,) with room = 0, scene = 1.
The heads give logits; cross-entropy is applied to logits, never to a softmax.
Nothing here calls ``.item()``: the values stay on the device until the caller logs them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossConfig
from .palette import IGNORE_INDEX

TERMS = ("mse", "segmentation", "classification", "kld")


def compute_losses(
    outputs: dict[str, torch.Tensor],
    rgb: torch.Tensor,
    class_map: torch.Tensor,
    label: torch.Tensor,
    weights: LossConfig,
) -> dict[str, torch.Tensor]:
    """``{term: raw, term_weighted: weight * raw, ..., total: sum of weighted}``.

    The KLD term is the posterior's KL: 0 for the deterministic encoder's point mass, so both
    experiments log the same columns.
    """
    # Losses in float32 whatever the autocast dtype of the heads.
    raw = {
        "mse": F.mse_loss(outputs["rgb"].float(), rgb),
        "segmentation": _segmentation_ce(outputs["segmentation"].float(), class_map),
        "classification": F.cross_entropy(outputs["classification"].float(), label),
        "kld": outputs["posterior"].kl(),
    }
    losses: dict[str, torch.Tensor] = {}
    total = rgb.new_zeros(())
    for term in TERMS:
        weighted = getattr(weights, term) * raw[term]
        losses[term] = raw[term]
        losses[f"{term}_weighted"] = weighted
        total = total + weighted
    losses["total"] = total
    return losses


def _segmentation_ce(logits: torch.Tensor, class_map: torch.Tensor) -> torch.Tensor:
    # A batch whose pixels are all off-palette would give 0/0 = NaN with the mean reduction;
    # sum over valid pixels and divide by at least one instead.
    per_pixel = F.cross_entropy(logits, class_map, ignore_index=IGNORE_INDEX, reduction="sum")
    valid = (class_map != IGNORE_INDEX).sum().clamp_min(1)
    return per_pixel / valid
