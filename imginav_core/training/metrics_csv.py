"""The metrics CSV: one row per epoch, its columns, and the writer.

Written whole after every epoch, to the run folder and as a copy beside the other runs' in the
phase folder. The ``status`` column says how a run ended: ``completed``, ``early_stopped``,
``stopped_non_finite``, or ``running`` on the last row of a run still going or killed.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..files import write_text_atomic
from ..losses import TERMS

LOSS_COLUMNS = ["total"] + [name for term in TERMS for name in (term, f"{term}_weighted")]
# Wall-clock columns: epoch_seconds is the training pass, val_seconds the validation pass. They
# are the only ones that differ between otherwise identical runs.
TIMING_COLUMNS = ["epoch_seconds", "train_images_per_s", "val_seconds"]
COLUMNS = (
    ["epoch"]
    + [f"train_{c}" for c in LOSS_COLUMNS]
    + [f"val_{c}" for c in LOSS_COLUMNS]
    + ["val_psnr", "val_miou", "val_pixel_accuracy", "val_classification_accuracy", "lr"]
    + TIMING_COLUMNS
    + ["is_best", "status"]
)


def write_metrics(cfg: Config, history: list[dict[str, Any]]) -> None:
    lines = [",".join(COLUMNS)]
    for row in history:
        lines.append(",".join(_cell(row.get(c, "")) for c in COLUMNS))
    text = "\n".join(lines) + "\n"
    write_text_atomic(cfg.outputs.metrics_csv(cfg.name), text)
    write_text_atomic(cfg.outputs.phase_metrics_csv(cfg.name), text)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)
