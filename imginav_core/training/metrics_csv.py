"""The metrics CSV: one row per epoch, its columns, and the writer.

Written whole after every epoch, to the run folder and as a copy beside the other runs' in the
phase folder. The loss columns follow from ``losses.TERMS`` at the time of writing: for the training
pass (``train_``) and the validation pass (``val_``), ``total`` (what the optimiser minimises),
``reconstruction`` (the weighted terms that count as reconstruction: not the KL), then each term raw
and weighted (``NAME``, ``NAME_weighted``). ``is_best`` marks the epochs whose ``val_<monitor>``
(``training.early_stopping.monitor``) improved by more than ``min_delta``: those that wrote ``best.pt``.
The ``status`` column says how a run ended: ``completed``, ``early_stopped``,
``stopped_non_finite``, or ``running`` on the last row of a run still going or killed.
"""

from __future__ import annotations

from typing import Any

from .. import losses
from ..config import Config
from ..files import write_text_atomic

# Wall-clock columns: epoch_seconds is the training pass, val_seconds the validation pass. They
# are the only ones that differ between otherwise identical runs.
TIMING_COLUMNS = ["epoch_seconds", "train_images_per_s", "val_seconds"]
RECONSTRUCTION_COLUMNS = ["val_psnr", "val_miou", "val_pixel_accuracy", "val_classification_accuracy"]


def loss_columns() -> list[str]:
    """The loss figures of one pass: the sums, then each registered term raw and weighted."""
    return [*losses.SUMS] + [name for term in losses.TERMS for name in (term.name, f"{term.name}_weighted")]


def columns() -> list[str]:
    """The metrics CSV's header."""
    return (
        ["epoch"]
        + [f"train_{c}" for c in loss_columns()]
        + [f"val_{c}" for c in loss_columns()]
        + RECONSTRUCTION_COLUMNS
        + ["lr"]
        + TIMING_COLUMNS
        + ["is_best", "status"]
    )


def write_metrics(cfg: Config, history: list[dict[str, Any]]) -> None:
    header = columns()
    lines = [",".join(header)]
    for row in history:
        lines.append(",".join(_cell(row.get(c, "")) for c in header))
    text = "\n".join(lines) + "\n"
    for path in (cfg.outputs.metrics_csv(cfg.name), cfg.outputs.phase_metrics_csv(cfg.name)):
        # a finished run opened again (a notebook shown, a job resubmitted) leaves its files as they are
        if not path.is_file() or path.read_text() != text:
            write_text_atomic(path, text)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)
