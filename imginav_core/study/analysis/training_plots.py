"""How training went: the figures and tables of a run's training (train.ipynb) and of every run
side by side (analysis.ipynb's first section), from the runs' metrics CSVs, configs and provenance."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ... import losses
from ...config import Config, flatten
from .. import numbers
from ..runs import RunSummary
from .criteria import Rule
from .decision import recipe_flags
from .plots import LINESTYLES, _colour, _seed_index, run_label


def settings_table(cfg: Config) -> pd.DataFrame:
    """Every setting of a run, one dotted key per row (paths as the report may show them)."""
    values = flatten(cfg.to_dict())
    for key in ("output_root", "data.manifest", "data.cache_dir"):
        if values[key]:
            values[key] = cfg.outputs.shown(values[key])
    table = pd.DataFrame({"value": {k: _setting(v) for k, v in values.items()}})
    table.index.name = "setting"
    return table


def _setting(value) -> str:
    """A setting as it is written in a config: ``1e-4`` (as the study's files write a weight or a
    learning rate, never Python's ``1e-05``), ``0.01``, ``16``."""
    if isinstance(value, float) and value and abs(value) < 1e-3:
        mantissa, exponent = f"{value:.6g}".split("e") if "e" in f"{value:.6g}" else (f"{value:.6g}", "")
        return f"{mantissa}e{int(exponent)}" if exponent else mantissa
    return str(value)


def curves(runs: list[RunSummary], column: str, ylabel: str, title: str, log: bool = True) -> plt.Figure:
    """One line per run of a metrics-CSV column against the epoch (colour: the arm; line style:
    the seed); the best epoch is circled. ``column`` "selection": each run's own
    ``RunSummary.selection_column``, the validation loss that picked its best epoch."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for run in runs:
        style = LINESTYLES[_seed_index(runs, run) % len(LINESTYLES)]
        own = run.selection_column if column == "selection" else column
        ax.plot(
            run.metrics["epoch"],
            run.metrics[own],
            marker="o",
            ms=3,
            ls=style,
            color=_colour(run.label),
            label=run_label(run),
        )
        if run.best_epoch:
            ax.scatter(
                [run.best_epoch],
                [run.best_row[own]],
                s=90,
                facecolors="none",
                edgecolors=_colour(run.label),
                linewidths=1.5,
            )
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(title="circle = best epoch", fontsize=7, title_fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def provenance_table(run: RunSummary) -> pd.DataFrame:
    """What produced the run, one column per start (a resumed run may have moved machines)."""
    path = run.outputs.provenance(run.name)
    if not path.is_file():
        return pd.DataFrame({"note": [f"no {path.name}: the run was trained by an older version"]})
    sessions = json.loads(path.read_text())["sessions"]
    table = pd.DataFrame(sessions, index=[f"start {i + 1}" for i in range(len(sessions))]).T
    table.index.name = "recorded"
    return table


def recipe_summary(runs: list[RunSummary]) -> str:
    """The runs' differing recipes (``decision.recipe_flags``), or the one recipe they share."""
    flags = recipe_flags(runs)
    if flags:
        return "\n".join(flags)
    shared = provenance_table(runs[0]).iloc[:, -1]
    return "every run used the same recipe: " + ", ".join(
        f"{key} {value}"
        for key, value in shared.items()
        if key in ("precision", "memory_format", "compile", "world_size")
    )


def selection_curves(runs: list[RunSummary]) -> plt.Figure:
    """Each run's validation loss that picked its best epoch and stopped it early, per epoch."""
    monitors = sorted({run.config.training.early_stopping.monitor for run in runs})
    return curves(
        runs,
        "selection",
        f"validation {' or '.join(monitors)} loss (weighted)",
        "Best-checkpoint and early-stopping criterion per epoch",
    )


# The per-epoch table's columns: (CSV column, header). The losses that pick the best epoch and the
# validation measures a reader follows; the rest of the CSV (each term's weighted value, the training
# terms, the learning rate) is in the file.
EPOCH_COLUMNS = (
    ("train_total", "train loss"),
    ("val_total", "loss"),
    ("selection", "selection loss"),
    ("val_mse", "MSE"),
    ("val_segmentation", "seg. CE"),
    ("val_kld_weighted", "KL weighted"),
    ("val_psnr", "PSNR (dB)"),
    ("val_miou", "mIoU"),
    ("val_classification_accuracy", "room / scene acc."),
    ("epoch_seconds", "s per epoch"),
)


def epoch_table(run: RunSummary):
    """One run's metrics per epoch, as the report shows them: the columns that matter (``EPOCH_COLUMNS``;
    the KL only for a VAE), 3 significant figures with a column's scale in its header, ``*`` on the
    epochs whose selection loss improved. A table (a pandas Styler) whose caption names the CSV
    columns, so that a reader finds them in ``NAME_metrics.csv``."""
    columns = {}
    for column, header in EPOCH_COLUMNS:
        column = run.selection_column if column == "selection" else column
        if column == "val_total" and run.selection_column == "val_total":
            continue  # an older run picked on the total: one column
        if column == "val_kld_weighted" and not run.config.loss.get("kld", 0.0) > 0:
            continue  # a deterministic encoder has no KL
        if column in run.metrics:
            columns[column] = header
    table = numbers.table(run.metrics[["epoch", *columns]].rename(columns=columns))
    table["best"] = ["*" if flag else "" for flag in run.metrics["is_best"].astype(bool)]
    caption = (
        f"Validation measures (but the training loss) per epoch, from {run.name}_metrics.csv: its columns "
        f"{', '.join(['epoch', *columns])} and is_best (*: the selection loss improved, the best checkpoint)."
    )
    return table.style.hide(axis="index").set_caption(caption)


def training_curves(run: RunSummary) -> plt.Figure:
    """One panel per loss term (raw, unweighted): training and validation against the epoch."""
    weighted = [t.name for t in losses.TERMS if run.config.loss.get(t.name, 0.0) > 0]  # V1's KL (weight 0): no panel
    terms = [t for t in [*losses.SUMS, *weighted] if f"val_{t}" in run.metrics]  # an older run: no reconstruction
    columns = 3 if len(terms) > 4 else 2
    rows = -(-len(terms) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(terms) :]:
        ax.set_visible(False)
    for ax, term in zip(axes.flat, terms):
        ax.plot(run.metrics["epoch"], run.metrics[f"train_{term}"], marker=".", label="train")
        ax.plot(run.metrics["epoch"], run.metrics[f"val_{term}"], marker="o", label="validation")
        title = f"{term} (weighted)" if term in losses.SUMS else term
        ax.set(title=title + (" *" if f"val_{term}" == run.selection_column else ""), xlabel="epoch", yscale="log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{run.name}: loss terms (* picks the best epoch)", fontsize=10)
    fig.tight_layout()
    return fig


def kld_trend(runs: list[RunSummary], low: float = Rule.kld_low, high: float = Rule.kld_high) -> plt.Figure:
    """The weighted KLD of each VAE run per epoch against the specification's band."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    values = [low, high]
    for run in runs:
        style = LINESTYLES[_seed_index(runs, run) % len(LINESTYLES)]
        ax.plot(
            run.metrics["epoch"],
            run.metrics["val_kld_weighted"],
            marker="o",
            ms=3,
            ls=style,
            color=_colour(run.label),
            label=f"{run_label(run)} validation",
        )
        values += run.metrics["val_kld_weighted"].tolist()
    ax.axhspan(low, high, color="#4daf4a", alpha=0.15, label=f"band {low:g}..{high:g}")
    finite = [v for v in values if np.isfinite(v) and v > 0]
    ax.set(
        xlabel="epoch",
        ylabel="weighted KLD",
        yscale="log",
        title="KL term against the band",
        ylim=(min(finite) / 2, max(finite) * 2),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def stability(runs: list[RunSummary]) -> plt.Figure:
    """Left: training loss per epoch. Right: its relative change from one epoch to the next."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.4))
    for run in runs:
        style = LINESTYLES[_seed_index(runs, run) % len(LINESTYLES)]
        loss = run.metrics["train_total"].to_numpy()
        left.plot(
            run.metrics["epoch"], loss, marker="o", ms=3, ls=style, color=_colour(run.label), label=run_label(run)
        )
        if len(loss) > 1:
            change = np.abs(np.diff(loss)) / np.abs(loss[:-1])
            right.plot(
                run.metrics["epoch"].to_numpy()[1:],
                change,
                marker="o",
                ms=3,
                ls=style,
                color=_colour(run.label),
                label=run_label(run),
            )
    left.set(xlabel="epoch", ylabel="training loss (total)", yscale="log", title="training loss")
    right.set(xlabel="epoch", ylabel="|change| / previous", yscale="log", title="epoch-to-epoch change")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def final_metrics_table(runs: list[RunSummary]) -> pd.DataFrame:
    """Per run, the validation metrics of its best epoch and how the run went, as the report shows
    them (3 significant figures; a row's scale in its name). The analysis shows one arm's runs at a
    time: five seeds a side fit the page, ten columns do not."""
    monitors = sorted({run.selection_column for run in runs})
    rows = {}
    for run in runs:
        best = run.best_row
        rows[run_label(run)] = {
            "status": run.status.replace("_", " ") + ("" if run.finished else " (UNFINISHED)"),
            "val MSE": best["val_mse"],
            "PSNR (dB)": best["val_psnr"],
            "mIoU": best["val_miou"],
            "pixel accuracy": best["val_pixel_accuracy"],
            "classification accuracy": best["val_classification_accuracy"],
            **{
                f"{t.label} ({kind})": best.get(f"val_{t.name}{suffix}", math.nan)
                for t in losses.TERMS
                if not t.reconstruction
                for kind, suffix in (("raw", ""), ("weighted", "_weighted"))
            },
            "val total loss": best["val_total"],
            f"val loss picking the best epoch ({' or '.join(monitors)})": best[run.selection_column],
            "epochs run": int(run.epochs_run),
            "best epoch": int(run.best_epoch),
            "minutes": run.minutes,
            "images/s": run.images_per_s,
        }
    return numbers.table(pd.DataFrame(rows), by="row")
