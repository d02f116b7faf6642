"""Figures and tables of the notebooks. Each function returns a matplotlib Figure (or a
DataFrame) and draws nothing the caption in the notebook does not explain."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ... import losses
from ...config import Config, flatten
from ...data.manifest import LayoutRecord
from ...training.metrics_csv import RECONSTRUCTION_COLUMNS, TIMING_COLUMNS
from ..arms import decision_arms, study_arms
from ..results import Decision
from ..runs import RunSummary
from .criteria import Rule
from .decision import recipe_flags
from .measures import ACTIVE_UNIT_THRESHOLD
from .study import Study
from .sweep import KLSweep, number, weight_text

LINESTYLES = ("-", "--", ":", "-.")


def _colour(label: str) -> str:
    """The arm's colour, as the study file gives it; grey for a label that is no arm of it."""
    arm = study_arms().get(label)
    return arm.colour if arm else "#4d4d4d"


def _seed_index(runs: list[RunSummary], run: RunSummary) -> int:
    """The position of ``run`` among the runs of its arm, by seed: its line style."""
    same = sorted((r for r in runs if r.label == run.label), key=lambda r: r.config.training.seed)
    return next(i for i, r in enumerate(same) if r.name == run.name)


def run_label(run: RunSummary) -> str:
    """``V1 seed 42``: the arm and the training seed."""
    return f"{run.label} seed {run.config.training.seed}"


def settings_table(cfg: Config) -> pd.DataFrame:
    """Every setting of a run, one dotted key per row (paths as the report may show them)."""
    values = flatten(cfg.to_dict())
    for key in ("output_root", "data.manifest", "data.cache_dir"):
        if values[key]:
            values[key] = cfg.outputs.shown(values[key])
    table = pd.DataFrame({"value": {k: str(v) for k, v in values.items()}})
    table.index.name = "setting"
    return table


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


def epoch_table(run: RunSummary) -> pd.DataFrame:
    """The metrics CSV of one run for reading, indexed by epoch: the losses (total; the monitored
    reconstruction sum; each term raw; the weighted terms outside the reconstruction sum), the
    reconstruction metrics, the timings and how the run went."""
    columns = ["train_total", "val_total", run.selection_column]
    columns += [f"val_{t.name}" for t in losses.TERMS]
    columns += [f"val_{t.name}_weighted" for t in losses.TERMS if not t.reconstruction]
    columns += RECONSTRUCTION_COLUMNS + TIMING_COLUMNS + ["is_best", "status"]
    present = list(dict.fromkeys(c for c in columns if c in run.metrics))  # an older run may lack a column
    return run.metrics.set_index("epoch")[present]


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
    """Per run, the validation metrics of its best epoch and how the run went."""
    rows = {}
    for run in runs:
        best = run.best_row
        rows[run_label(run)] = {
            "status": run.status + ("" if run.finished else " (UNFINISHED)"),
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
            "val loss picking the best epoch": f"{best[run.selection_column]:.5g} ({run.selection_column})",
            "epochs run": run.epochs_run,
            "best epoch": run.best_epoch,
            "minutes": run.minutes,
            "images/s": run.images_per_s,
        }
    return pd.DataFrame(rows)


def kl_positions(weights: list[float], gap: float = 1.5) -> dict[float, float]:
    """Where each KL weight sits on the curve's axis: log10 of the weight; 0 (the deterministic
    encoder, which no log axis holds) drawn apart, ``gap`` decades left of the smallest positive
    weight."""
    positive = [w for w in weights if w > 0]
    left = math.log10(min(positive)) if positive else 0.0
    return {w: math.log10(w) if w > 0 else left - gap for w in weights}


SWEEP_PANELS = (
    ("fld", "probe FLD (lower is better)"),
    ("mse", "reconstruction MSE (lower is better)"),
    ("small_class_iou", "small-class IoU (higher is better)"),
    ("kl_nats_per_element", "KL, nats per latent element"),
    ("active_share", "active units (share)"),
)


def kl_curve(sweep: KLSweep) -> plt.Figure:
    """The KL-weight sweep against the weight on a log axis, 0 (V1, the deterministic encoder)
    drawn apart at the left: the probe's FLD (each run's geometric mean over the scorer seeds),
    the reconstruction MSE and small-class IoU on the test layouts, the KL in nats per latent
    element and the share of active units. Each weight's mean over its runs (FLD: the geometric
    mean) with its 95 % interval over the runs (none with one run), the runs as small dots; V1 and
    V2 marked in their colours. The line joins the positive weights only."""
    x = kl_positions([p.kld for p in sweep.curve])
    markers = dict(zip(decision_arms(), ("s", "D")))  # the decided arms' own points: square, diamond
    fig, axes = plt.subplots(3, 2, figsize=(8.4, 9.6), sharex=True)
    for ax, (key, title) in zip(axes.flat, SWEEP_PANELS):
        line = []
        for point in sweep.curve:
            value = getattr(point, key)
            if value.estimate is None:
                continue
            colour = _colour(point.arm) if point.comparison else "#4d4d4d"
            ax.scatter([x[point.kld]] * len(value.runs), value.runs, s=10, color=colour, alpha=0.4, zorder=2)
            error = None if value.ci95 is None else [[value.estimate - value.ci95[0]], [value.ci95[1] - value.estimate]]
            marker = markers.get(point.arm, "o") if point.comparison else "o"
            ax.errorbar([x[point.kld]], [value.estimate], yerr=error, marker=marker, capsize=3, color=colour, zorder=3)
            if point.kld > 0:
                line.append((x[point.kld], value.estimate))
        if line:
            ax.plot(*zip(*line), color="#4d4d4d", lw=1, zorder=1)
        if 0.0 in x and len(x) > 1:  # the break between 0 and the log axis
            ax.axvline((x[0.0] + min(v for w, v in x.items() if w > 0)) / 2, color="#999999", ls=":", lw=1)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    labels = {p.kld: weight_text(p.kld) + (f"\n({p.arm})" if p.comparison else "") for p in sweep.curve}
    recommended = next((p for p in sweep.curve if p.kld == sweep.recommendation.kld), None)
    if recommended is not None and recommended.fld.estimate is not None:  # on the FLD panel: a ring
        axes[0, 0].scatter(
            [x[recommended.kld]],
            [recommended.fld.estimate],
            s=220,
            facecolors="none",
            edgecolors="#4daf4a",
            lw=2,
            zorder=4,
        )
    for ax in (axes[2, 0], axes[1, 1]):  # the lowest panel of each column
        ax.tick_params(labelbottom=True)
        ax.set_xticks(list(x.values()), [labels[w] for w in x])
        ax.set_xlabel("KL weight (log axis; 0 apart)")
    notes = axes.flat[len(SWEEP_PANELS)]
    notes.axis("off")
    shown = [
        plt.Line2D(
            [],
            [],
            color=_colour(p.arm),
            marker=markers.get(p.arm, "o"),
            label=f"{p.arm}: weight 0, the deterministic encoder"
            if p.kld == 0
            else f"{p.arm}: its weight {weight_text(p.kld)} (the comparison's VAE)",
        )
        for p in sweep.curve
        if p.comparison
    ]
    shown += [
        plt.Line2D([], [], color="#4d4d4d", marker="o", label="the VAE at the sweep's other weights"),
        plt.Line2D(
            [],
            [],
            color="#4daf4a",
            marker="o",
            ls="",
            mfc="none",
            ms=12,
            label="recommended (secondary, not the decision)",
        ),
    ]
    notes.legend(handles=shown, loc="upper left", frameon=False, fontsize=9)
    seeds = sorted({len(p.runs) for p in sweep.curve})
    notes.text(
        0.0,
        0.45,
        "\n".join(
            [
                f"{'/'.join(map(str, seeds))} run(s) per weight: dots;",
                "bars: 95 % interval over the runs" + (" (none with one run)" if 1 in seeds else ""),
                f"FLD: {sweep.fld_score}",
                f"MSE, IoU: on {sweep.evaluation_images} test layouts",
            ]
        ),
        fontsize=8,
        va="top",
        transform=notes.transAxes,
    )
    fig.suptitle("The KL weight: from the deterministic encoder to a strongly regularised VAE", fontsize=11)
    fig.tight_layout()
    return fig


def _estimate(value, digits: str = "") -> str:
    if value.estimate is None:
        return "—"

    def shown(v: float) -> str:
        return f"{v:{digits}}" if digits else number(v)

    if value.ci95 is None:
        return shown(value.estimate)
    return f"{shown(value.estimate)} ({shown(value.ci95[0])}-{shown(value.ci95[1])})"


def kl_curve_table(sweep: KLSweep) -> pd.DataFrame:
    """The curve's numbers, one row per KL weight: each value with its 95 % interval over the runs
    (none with one run), and the decision's reconstruction criteria against V1 (the verdict).
    Short headers, so that nine columns fit the book's page without breaking words."""
    rows = []
    for point in sweep.curve:
        verdicts = {name: c["verdict"] for name, c in point.non_inferiority.items()}
        rows.append(
            {
                "KL weight": point.label,
                "n": len(point.runs),
                "FLD": _estimate(point.fld),
                "MSE": _estimate(point.mse),
                "small IoU": _estimate(point.small_class_iou, ".3f"),
                "KL nats": _estimate(point.kl_nats_per_element),
                "active": _estimate(point.active_share, ".2f"),
                "MSE vs V1": verdicts.get("reconstruction_mse", "reference"),
                "IoU vs V1": verdicts.get("small_class_iou", "reference"),
            }
        )
    return pd.DataFrame(rows).set_index("KL weight")


def reconstructions(study: Study) -> plt.Figure:
    """Per row one test layout (the evaluation split's): input, each arm's reconstruction and
    segmentation (the arm's first seed)."""
    shown = [study.shown(label) for label in study.labels]
    types = study.layouts.types[study.example_positions]  # the positions index the evaluation split
    titles = ["input"] + [f"{r.label} reconstruction" for r in shown] + [f"{r.label} segmentation" for r in shown]
    n = len(study.example_positions)
    fig, axes = plt.subplots(n, len(titles), figsize=(2.0 * len(titles), 2.0 * n), squeeze=False)
    for i in range(n):
        images = (
            [study.inputs[i]] + [r.examples["rgb"][i] for r in shown] + [r.examples["segmentation"][i] for r in shown]
        )
        for j, image in enumerate(images):
            ax = axes[i, j]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
            if j == 0:
                ax.set_ylabel("room" if types[i] == 0 else "scene", fontsize=8)
    fig.suptitle("seeds shown: " + ", ".join(f"{r.label} {r.seed}" for r in shown), fontsize=8)
    fig.tight_layout()
    return fig


def short_id(identifier: str) -> str:
    """The first part of a scene id (a UUID's first 8 characters), enough to tell scenes apart on screen."""
    return identifier.split("-")[0][:8] or identifier[:8]


def layout_name(record: LayoutRecord) -> str:
    """A layout as a reader names it: ``scene ef98dda9``, ``room 6980 of scene ef98dda9`` (the
    file name where the manifest gives no scene)."""
    if not record.scene_id:
        return f"{record.type} {record.path.stem}"
    scene = f"scene {short_id(record.scene_id)}"
    return scene if record.type == "scene" else f"room {record.room_id} of {scene}"


def pair_title(study: Study, pair_index: int) -> str:
    """``1. room 6980 of scene ef98dda9 → scene ef98dda9``: the pair's number and its two layouts."""
    pair = study.pairs[pair_index]
    layouts = study.layouts
    a, b = (layout_name(layouts.cache.records[layouts.indices[p]]) for p in (pair.a, pair.b))
    return f"{pair_index + 1}. {a} → {b}"


def interpolation_strips(study: Study, pair_index: int = 0, every: int = 2) -> plt.Figure:
    """Decoded frames along the straight path between one pair, one row per arm (first seed)."""
    label = study.pairs[pair_index].label
    rows = [(f"{r.label} seed {r.seed}", r.frames[label]) for r in (study.shown(a) for a in study.labels)]
    picks = list(range(0, len(study.alphas), every))
    if picks[-1] != len(study.alphas) - 1:
        picks.append(len(study.alphas) - 1)
    fig, axes = plt.subplots(len(rows), len(picks), figsize=(1.5 * len(picks), 1.6 * len(rows)), squeeze=False)
    for i, (name, frames) in enumerate(rows):
        for j, k in enumerate(picks):
            ax = axes[i, j]
            ax.imshow(frames[k], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"alpha {study.alphas[k]:.1f}", fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"pair {pair_title(study, pair_index)}", fontsize=9)
    fig.tight_layout()
    return fig


def noise_robustness(study: Study) -> plt.Figure:
    """Left: how far latent noise moves the decoded layout, ``c = MSE(D(z + n), D(z))``, against the
    noise (sigma x each channel's std). Right: the same on the decoder's own scale, ``c / (c + d)``
    with ``d = MSE(D(z), D(z'))`` the decoded distance to another layout (the latent-noise
    criterion: 0 = unmoved, 0.5 = as far as another layout, 1 for a decoder ignoring its latent).
    Each run a thin line, each arm's mean over seeds a thick one. Descriptive: decides nothing."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    for label in study.labels:
        runs = study.arm(label)
        sigmas = runs[0].metrics["noise"]["sigmas"]
        for ax, key in ((left, "decoded_change"), (right, "relative_change")):
            values = np.array([r.metrics["noise"][key] for r in runs])
            for line in values:
                ax.plot(sigmas, line, color=_colour(label), alpha=0.35, lw=1)
            ax.plot(
                sigmas,
                values.mean(0),
                marker="o",
                color=_colour(label),
                lw=2,
                label=f"{label} (mean of {len(runs)} seed{'s' if len(runs) > 1 else ''})",
            )
    left.set(
        xlabel="noise sigma (x each latent channel's std)",
        ylabel="c = MSE(D(z + n), D(z))",
        yscale="log",
        title="Decoded change under latent noise",
    )
    right.set(
        xlabel="noise sigma (x each latent channel's std)",
        ylabel="c / (c + d), d = MSE(D(z), D(z'))",
        ylim=(0, 1),
        title="On the decoder's own scale (lower = robust)",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def latent_distribution(study: Study) -> plt.Figure:
    """Left: histogram of what a diffusion model would see, scaled by its scale factor (the VAE's
    posterior samples). Right: per-channel excess kurtosis (0 = Gaussian)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.4))
    width = 0.8 / len(study.labels)  # the arms' bars side by side on each channel
    for k, label in enumerate(study.labels):
        r = study.shown(label)
        lat = r.metrics["latent"]
        values = r.latents.flatten().numpy() * lat["scale_factor"]
        left.hist(
            values,
            bins=80,
            histtype="step",
            density=True,
            color=_colour(label),
            label=f"{label} seed {r.seed} (means, x scale factor {lat['scale_factor']:.3g})",
        )
        kurtosis = lat["channel_excess_kurtosis"]
        right.bar(
            np.arange(len(kurtosis)) + (k - (len(study.labels) - 1) / 2) * width,
            kurtosis,
            width=width,
            color=_colour(label),
            label=f"{label} ({lat['of']})",
        )
    left.set(xlabel="latent value x scale factor", ylabel="density", yscale="log", title="latent values")
    right.axhline(0, color="k", lw=0.8)
    right.set(xlabel="latent channel", ylabel="excess kurtosis", title="heavy tails per channel (0 = Gaussian)")
    for ax in (left, right):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def posterior_channels(study: Study) -> plt.Figure | None:
    """The VAE's (the decision's candidate arm's) KL per latent channel and the share of each
    channel's units that are active."""
    _, vae = decision_arms()
    r = study.shown(vae)
    post = r.metrics.get("posterior")
    if not post:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.2))
    channels = np.arange(len(post["kl_per_channel"]))
    left.bar(channels, post["kl_per_channel"], color=_colour(vae))
    left.set(xlabel="latent channel", ylabel="KL (nats per element)", title=f"{vae} seed {r.seed}: KL per channel")
    right.bar(channels, post["active_share_per_channel"], color=_colour(vae))
    right.set(
        xlabel="latent channel",
        ylabel="share of units active",
        ylim=(0, 1.05),
        title=f"{vae} seed {r.seed}: {post['active_units']} of {post['units']} units active",
    )
    fig.tight_layout()
    return fig


# ---- tables of the latent-space measurements ------------------------------------------------


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def reconstruction_table(study: Study) -> pd.DataFrame:
    """Reconstruction quality and blur, each arm's mean over its seeds: one row per measure, one
    column per arm and subset (all measured layouts, rooms, scenes). Descriptive: intervals and
    verdicts are the criteria table's."""
    columns = {}
    for label in study.labels:
        runs = study.arm(label)
        for subset in runs[0].metrics["reconstruction"]:
            values = [r.metrics["reconstruction"][subset] for r in runs]
            columns[(label, subset)] = {
                name: _mean([v[key] for v in values])
                for name, key in (
                    ("layouts", "images"),
                    ("MSE", "mse"),
                    ("PSNR (dB)", "psnr"),
                    ("SSIM", "ssim"),
                    ("mIoU", "miou"),
                    ("small-class IoU", "small_class_iou"),
                    ("pixel accuracy", "pixel_accuracy"),
                    ("room/scene accuracy", "classification_accuracy"),
                    ("sharpness ratio (1 = as sharp; above 1 = ringing)", "sharpness_ratio"),
                    ("sharpness error |log ratio| (0 = as sharp)", "sharpness_error"),
                    ("palette purity", "palette_purity"),
                )
            }
    table = pd.DataFrame(columns)
    table.columns.names = ["arm (mean over seeds)", "layouts"]
    table.index.name = "descriptive"
    return table


def latent_table(study: Study) -> pd.DataFrame:
    """What a diffusion model trained on each space would see, and the VAE's posterior, each run
    a column. Descriptive, apart from posterior collapse (a flag of the decision)."""
    rows = {}
    for r in study.models:
        lat, post = r.metrics["latent"], r.metrics.get("posterior")
        row = {
            "what a diffusion model sees": lat["of"],
            "std": f"{lat['std']:.3g}",
            "scale factor (1/std)": f"{lat['scale_factor']:.3g}",
            "channel std min..max": f"{min(lat['channel_std']):.3g}..{max(lat['channel_std']):.3g}",
            "excess kurtosis per channel, median (max)": (
                f"{lat['median_channel_excess_kurtosis']:.2g} ({lat['max_channel_excess_kurtosis']:.2g})"
            ),
        }
        if post:
            row |= {
                "KL (nats per latent element)": f"{post['kl_nats_per_element']:.3g}",
                "KL (bits per pixel)": f"{post['kl_bits_per_pixel']:.3g}",
                "KL weighted (band 1e-4..1e-3)": f"{post['kl_weighted']:.3g}",
                "KL share of the validation loss": f"{100 * post['kl_share_of_loss']:.2g} %",
                f"active units (var > {ACTIVE_UNIT_THRESHOLD:g})": f"{post['active_units']} of {post['units']} "
                f"({100 * post['active_share']:.0f} %)",
                "posterior noise / spread of means (median channel)": f"{post['median_noise_to_signal']:.3g}",
                "posterior collapse": "yes" if post["collapsed"] else "no",
            }
        rows[f"{r.label} seed {r.seed}"] = row
    table = pd.DataFrame(rows).fillna("n/a (deterministic)")
    table.index.name = "descriptive"
    return table


def interpolation_table(study: Study) -> pd.DataFrame:
    """What lies between the fixed pairs on the straight path, per arm (mean over seeds) and kind
    of pair; and between each test layout and its nearest training layout. *Validity* =
    relative purity (inner frames' over the ends') x gradualness (``measures.path_validity``);
    for the nearest training layout, the relative purity is the midpoints' over the
    reconstructions' (ratio of sums). Short column names, so that the table fits the page: *gradual*
    gradualness, *purity* / *worst* the inner frames' mean and worst palette purity, *seg. conf.*
    the segmentation's confidence, *real* the share the layout scorer places among real layouts,
    *length* the path-length ratio (a description, not a quality). All descriptive: they decide
    nothing (the criteria table says so)."""
    rows = {}
    for label in study.labels:
        runs = study.arm(label)
        for kind in ("all pairs", "room-room", "scene-scene", "room-scene"):
            infos = [
                r.metrics["interpolation"] if kind == "all pairs" else r.metrics["interpolation"].get(kind)
                for r in runs
            ]
            if all(infos):
                rows[(label, kind)] = {
                    "validity": _mean([i["pairs_validity"] for i in infos]),
                    "rel. purity": _mean([i["pairs_relative_purity"] for i in infos]),
                    "gradual": _mean([i["pairs_gradualness"] for i in infos]),
                    "purity": _mean([i["pairs_mean_purity"] for i in infos]),
                    "worst": _mean([i["pairs_min_purity"] for i in infos]),
                    "seg. conf.": _mean([i["pairs_mean_confidence"] for i in infos]),
                    "real": _mean([i.get("pairs_mean_realism", np.nan) for i in infos]),
                    "length": _mean([i["pairs_path_length_ratio"] for i in infos]),
                }
        neighbours = [r.metrics["nearest_neighbour"] for r in runs]
        rows[(label, "nearest training layout")] = {
            "rel. purity": _mean([n["relative_purity"] for n in neighbours]),
            "purity": _mean([n["nn_midpoint_purity"] for n in neighbours]),
            "seg. conf.": _mean([n["nn_midpoint_confidence"] for n in neighbours]),
            "real": _mean([n.get("nn_midpoint_realism", np.nan) for n in neighbours]),
        }
    table = pd.DataFrame(rows).T
    table.index.names = ["arm (mean over seeds)", "pairs"]
    return table


def _shown(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else ("" if value is None else str(value))


def _counts(c: dict) -> str:
    """What n is: the runs for the primary endpoint, else seeds and items."""
    if c.get("n_runs"):
        return f"{'+'.join(map(str, c['n_runs']))} runs"
    return f"{'+'.join(map(str, c['n_seeds']))} seeds, {c['n_images']}"


def criteria_table(decision: Decision) -> pd.DataFrame:
    """Each criterion of the rule and its role, each arm's mean over its seeds, the difference (VAE
    minus deterministic; relative where said) with its 95 % interval, the true difference the
    design would see with the rule's power, both ways (``<= 0.34 x or >= 2.97 x``: V2 / V1 at most
    or at least that, for a relative criterion; V2 - V1 for the others), the verdict (against the
    margin, if any; "not assessable" where a relative margin cannot be judged), what n is (runs for
    the probe's FLD; seeds and images or pairs for the others), and what is compared (each seed's
    value: decision.json). Few columns, so that the table fits the page; show it with ``.style``."""

    def mean(values) -> str:
        return _shown(float(np.mean(values))) if values else ""

    def seen(c: dict) -> str:
        found = c.get("detectable")
        if not found:
            return "unknown (one run in an arm)" if c.get("n_seeds") else ""
        unit = " x" if found["scale"].startswith("ratio") else ""
        return f"<= {_shown(float(found['at_most']))}{unit} or >= {_shown(float(found['at_least']))}{unit}"

    power = next((c["detectable"]["power"] for c in decision.criteria.values() if c.get("detectable")), 0.8)
    rows = {}
    for name, c in decision.criteria.items():
        interval = c.get("ci95")
        if c["role"] == "flag":
            difference, detectable = (
                ", ".join(
                    f"{k.replace('_', ' ')} {mean(c[k])}"
                    for k in ("kl_nats_per_element", "kl_bits_per_pixel", "kl_weighted")
                    if k in c
                ),
                "",
            )
        else:
            relative = " (relative)" if c.get("relative") else ""
            difference = f"{_shown(c['estimate'])} [{_shown(interval[0])}, {_shown(interval[1])}]{relative}"
            detectable = seen(c)
        margin = f" (margin {_shown(c['margin'])})" if c.get("margin") is not None else ""
        note = f" — {c['note']}" if c.get("note") else ""
        role = "descriptive" if c.get("descriptive") else c["role"]
        rows[f"{name.replace('_', ' ')} ({role})"] = {
            "V1 / V2": f"{mean(c.get('deterministic')) or '—'} / {mean(c.get('vae')) or '—'}",
            "V2 - V1 [95 % interval]": difference,
            f"seen {100 * power:.0f} % of the time if": detectable,
            "verdict": c["verdict"] + margin,
            "n": _counts(c),
            "what is compared": c["meaning"] + note,
        }
    table = pd.DataFrame(rows).T
    table.index.name = "criterion"
    return table


def robustness_table(decision: Decision) -> pd.DataFrame:
    """The primary endpoint's point estimate under each scorer seed alone and each denoiser budget:
    V2 / V1 of the geometric-mean FLD over each arm's runs (a ratio: FLDs of different scorer
    networks differ several-fold in scale), and whether it favours the same arm as the primary
    estimate. The last row is the primary itself, with its interval: point estimates that all
    favour one arm say nothing of whether the interval excludes no difference."""
    primary = decision.primary
    robustness = (primary or {}).get("robustness") or {}
    rows = {
        f"{kind} {key}": {"V2 / V1": _shown(check["ratio"]), "favours the same arm as the primary": check["agrees"]}
        for kind, table in (
            ("scorer seed", robustness.get("scorer_seeds", {})),
            ("budget", robustness.get("budgets", {})),
        )
        for key, check in table.items()
    }
    holds = robustness.get("ranking_holds")
    if primary is None:
        shown = ""
    else:
        low, high = (1 + v for v in primary["ci95"])
        shown = f"{_shown(1 + primary['estimate'])} [{_shown(low)}, {_shown(high)}] ({primary['verdict']})"
    rows["all checks (the primary, with its interval)"] = {
        "V2 / V1": shown,
        "favours the same arm as the primary": "not measured" if holds is None else holds,
    }
    table = pd.DataFrame(rows).T
    table.index.name = f"{decision.primary_endpoint.replace('_', ' ')}: robustness"
    if robustness.get("note"):
        table.attrs["note"] = robustness["note"]
    return table
