"""The loss terms, each one function and one weight, registered in ``TERMS``.

A term is a function ``(outputs, rgb, class_map, label) -> raw scalar`` and its name, which is its
weight's config key (``loss.NAME``) and its metrics columns (``train_NAME``, ``train_NAME_weighted``,
``val_NAME``, ``val_NAME_weighted``). The config's ``loss`` section, the metrics CSV, the plots and the
notebooks' tables all follow from ``TERMS``; the training loop calls ``compute_losses`` and never names
a term, so adding one (``add_term``) touches nothing else. A term may own state, e.g. a frozen
feature network for a perceptual loss: a callable object that builds its network on first use, on the
device of its inputs, with its own generator (not the global one, which the run's resumption replays),
and never trains it: it is no parameter of the model, so the optimiser and the checkpoints never see it.

Targets are explicit tensors (no guessing from strings or RGB at each step):
``rgb`` float in [-1, 1] (B, 3, H, W); ``class_map`` int64 (B, H, W) with ``IGNORE_INDEX``
for off-palette pixels; ``label`` int64 (B,) with room = 0, scene = 1.
The heads give logits; cross-entropy is applied to logits, never to a softmax.
Nothing here calls ``.item()``: the values stay on the device until the caller logs them.

Torch is imported inside the functions, not at the top: the package imports this module on import
(the config's ``loss`` keys are the names in ``TERMS``), and a login node's ``check`` must not pay
for torch.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import use_loss_terms
from .palette import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

# The sums over the weighted terms, logged beside them: "total" is what the optimiser minimises,
# "reconstruction" the terms that count as reconstruction (what training.early_stopping.monitor
# may select on, so that an arm's KL does not take part in choosing its best epoch).
SUMS = ("total", "reconstruction")


@dataclass(frozen=True)
class LossTerm:
    name: str  # its weight's config key loss.<name>, and its metrics columns
    compute: Callable[..., torch.Tensor]  # (outputs, rgb, class_map, label) -> the raw (unweighted) scalar
    reconstruction: bool  # counts toward "reconstruction", the quantity that selects the best checkpoint
    label: str  # how tables and figures name it


def _functional() -> Any:
    import torch.nn.functional as F  # here, not at the top: see the module's docstring

    return F


def mse(outputs: dict[str, Any], rgb: torch.Tensor, class_map: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the RGB head, in the images' [-1, 1] range (float32 whatever the autocast)."""
    return _functional().mse_loss(outputs["rgb"].float(), rgb)


def segmentation_ce(
    outputs: dict[str, Any], rgb: torch.Tensor, class_map: torch.Tensor, label: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the segmentation logits over the in-palette pixels."""
    # A batch whose pixels are all off-palette would give 0/0 = NaN with the mean reduction;
    # sum over valid pixels and divide by at least one instead.
    logits = outputs["segmentation"].float()
    per_pixel = _functional().cross_entropy(logits, class_map, ignore_index=IGNORE_INDEX, reduction="sum")
    valid = (class_map != IGNORE_INDEX).sum().clamp_min(1)
    return per_pixel / valid


def classification_ce(
    outputs: dict[str, Any], rgb: torch.Tensor, class_map: torch.Tensor, label: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the room/scene logits."""
    return _functional().cross_entropy(outputs["classification"].float(), label)


def kld(outputs: dict[str, Any], rgb: torch.Tensor, class_map: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The posterior's KL to N(0, I), the mean over every latent element (``model.DiagonalGaussian.kl``):
    0 for the deterministic encoder's point mass, so both experiments log the same columns."""
    return outputs["posterior"].kl()


# The one list of loss terms, in the order they are summed and logged.
TERMS: list[LossTerm] = [
    LossTerm("mse", mse, reconstruction=True, label="MSE"),
    LossTerm("segmentation", segmentation_ce, reconstruction=True, label="segmentation CE"),
    LossTerm("classification", classification_ce, reconstruction=True, label="classification CE"),
    LossTerm("kld", kld, reconstruction=False, label="KLD"),
]
use_loss_terms(lambda: [term.name for term in TERMS])


def add_term(term: LossTerm) -> None:
    """Register another loss term: its weight becomes the config key ``loss.NAME`` (which every
    config then states), its raw and weighted values metrics columns."""
    taken = {t.name for t in TERMS} | set(SUMS)
    if not term.name.isidentifier() or keyword.iskeyword(term.name) or term.name in taken:
        raise ValueError(
            f"loss term name {term.name!r}: use a new lower-case identifier (taken: {', '.join(sorted(taken))}); "
            "it names the config key loss.NAME and the metrics columns"
        )
    TERMS.append(term)


def compute_losses(
    outputs: dict[str, Any],
    rgb: torch.Tensor,
    class_map: torch.Tensor,
    label: torch.Tensor,
    weights: Mapping[str, float],
) -> dict[str, torch.Tensor]:
    """``{term: raw, term_weighted: weight * raw, ..., total, reconstruction}``: every term of
    ``TERMS``, weighted by ``weights`` (a config's ``loss``), and the sums ``SUMS``."""
    losses: dict[str, torch.Tensor] = {}
    total = reconstruction = rgb.new_zeros(())
    for term in TERMS:
        if term.name not in weights:
            raise KeyError(f"no weight for loss term '{term.name}': the config lacks loss.{term.name}")
        raw = term.compute(outputs, rgb, class_map, label)
        weighted = weights[term.name] * raw
        losses[term.name] = raw
        losses[f"{term.name}_weighted"] = weighted
        total = total + weighted
        if term.reconstruction:
            reconstruction = reconstruction + weighted
    losses["total"] = total
    losses["reconstruction"] = reconstruction
    return losses
