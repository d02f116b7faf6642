"""Figures and tables of the notebooks. Each function returns a matplotlib Figure (or a
DataFrame) and draws nothing the caption in the notebook does not explain."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..config import Config, flatten
from .decision import Thresholds
from .measures import ACTIVE_UNIT_THRESHOLD
from .runs import RunSummary
from .study import Study

COLOURS = {"V1": "#377eb8", "V2": "#e41a1c"}


def _colour(label: str) -> str:
    return COLOURS.get(label, "#4d4d4d")


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
    """One line per run of a metrics-CSV column against the epoch; the best epoch is marked."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for run in runs:
        ax.plot(run.metrics["epoch"], run.metrics[column], marker="o", color=_colour(run.label), label=run.label)
        if run.best_epoch:
            ax.scatter([run.best_epoch], [run.best_row[column]], s=120, facecolors="none",
                       edgecolors=_colour(run.label), linewidths=2)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(title="circle = best epoch", fontsize=8, title_fontsize=8)
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


def training_curves(run: RunSummary) -> plt.Figure:
    """One panel per loss term (raw, unweighted): training and validation against the epoch."""
    terms = ["total", "mse", "segmentation", "classification"] + (["kld"] if run.config.model.variational else [])
    columns = 3 if len(terms) > 4 else 2
    rows = -(-len(terms) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(terms):]:
        ax.set_visible(False)
    for ax, term in zip(axes.flat, terms):
        ax.plot(run.metrics["epoch"], run.metrics[f"train_{term}"], marker=".", label="train")
        ax.plot(run.metrics["epoch"], run.metrics[f"val_{term}"], marker="o", label="validation")
        ax.set(title=term if term != "total" else "total (weighted)", xlabel="epoch", yscale="log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{run.name}: loss terms", fontsize=10)
    fig.tight_layout()
    return fig


def kld_trend(run: RunSummary, low: float = Thresholds.kld_low, high: float = Thresholds.kld_high) -> plt.Figure:
    """The VAE's weighted validation KLD per epoch against the specification's band."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.axhspan(low, high, color="#4daf4a", alpha=0.15, label=f"specification band {low:g}..{high:g}")
    ax.plot(run.metrics["epoch"], run.metrics["val_kld_weighted"], marker="o", color=_colour(run.label),
            label=f"{run.label} weighted KLD (validation)")
    ax.plot(run.metrics["epoch"], run.metrics["train_kld_weighted"], marker=".", ls="--", color=_colour(run.label),
            alpha=0.6, label=f"{run.label} weighted KLD (training)")
    values = np.concatenate([run.metrics["val_kld_weighted"].to_numpy(), [low, high]])
    ax.set(xlabel="epoch", ylabel="KLD x weight", title="KL regularisation of the VAE", yscale="log",
           ylim=(values[values > 0].min() / 3, values.max() * 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def stability(runs: list[RunSummary]) -> plt.Figure:
    """Left: training loss per epoch. Right: its epoch-to-epoch relative change |L_t - L_t-1| / L_t-1."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.4))
    for run in runs:
        loss = run.metrics["train_total"].to_numpy()
        left.plot(run.metrics["epoch"], loss, marker="o", color=_colour(run.label), label=run.label)
        if len(loss) > 1:
            change = np.abs(np.diff(loss)) / loss[:-1]
            right.plot(run.metrics["epoch"].to_numpy()[1:], change, marker="o", color=_colour(run.label), label=run.label)
    left.set(xlabel="epoch", ylabel="training loss (total)", yscale="log", title="training loss")
    right.set(xlabel="epoch", ylabel="relative change from previous epoch", yscale="log", title="epoch-to-epoch variation")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def final_metrics_table(runs: list[RunSummary]) -> pd.DataFrame:
    """Per run, the validation metrics of its best epoch and how the run went."""
    rows = {}
    for run in runs:
        best = run.best_row
        rows[run.label] = {
            "experiment": run.name,
            "status": run.status + ("" if run.finished else " (UNFINISHED)"),
            "val MSE": best["val_mse"],
            "PSNR (dB)": best["val_psnr"],
            "mIoU": best["val_miou"],
            "pixel accuracy": best["val_pixel_accuracy"],
            "classification accuracy": best["val_classification_accuracy"],
            "KLD (raw)": best["val_kld"],
            "KLD (weighted)": best["val_kld_weighted"],
            "val total loss": best["val_total"],
            "epochs run": run.epochs_run,
            "best epoch": run.best_epoch,
            "minutes": run.minutes,
            "images/s": run.images_per_s,
        }
    return pd.DataFrame(rows)


def reconstructions(study: Study) -> plt.Figure:
    """Per row one validation layout: input, each model's reconstruction, each model's segmentation."""
    types = study.data.val.types[study.example_positions]
    titles = ["input"] + [f"{r.label} reconstruction" for r in study.models] + \
             [f"{r.label} segmentation" for r in study.models]
    n = len(study.example_positions)
    fig, axes = plt.subplots(n, len(titles), figsize=(2.0 * len(titles), 2.0 * n), squeeze=False)
    for i in range(n):
        images = [study.inputs[i]] + [r.examples["rgb"][i] for r in study.models] + \
                 [r.examples["segmentation"][i] for r in study.models]
        for j, image in enumerate(images):
            ax = axes[i, j]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
            if j == 0:
                ax.set_ylabel("room" if types[i] == 0 else "scene", fontsize=8)
    fig.tight_layout()
    return fig


def interpolation_strips(study: Study, pair_index: int = 0, every: int = 2) -> plt.Figure:
    """Decoded frames along the path between one pair, one row per model and path."""
    label = study.pairs[pair_index].label
    rows = [(f"{r.label} {path}", frames[label]) for r in study.models for path, frames in r.frames.items()]
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
    fig.suptitle(label, fontsize=9)
    fig.tight_layout()
    return fig


def noise_robustness(study: Study) -> plt.Figure:
    """Reconstruction MSE after adding noise of sigma x std(z) to the latents."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.4))
    for r in study.models:
        noise = r.metrics["noise"]
        left.plot(noise["sigmas"], noise["mse"], marker="o", color=_colour(r.label), label=r.label)
        right.plot(noise["sigmas"], noise["relative_to_clean"], marker="o", color=_colour(r.label), label=r.label)
    left.set(xlabel="noise sigma (x latent std)", ylabel="reconstruction MSE", yscale="log", title="MSE under latent noise")
    right.set(xlabel="noise sigma (x latent std)", ylabel="MSE / MSE without noise", yscale="log",
              title="degradation relative to clean")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def latent_distribution(study: Study) -> plt.Figure:
    """Left: histogram of latent values (standardised by each model's scale factor would centre them
    at unit width). Right: per-channel standard deviation, and the VAE's KL per channel."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.4))
    for r in study.models:
        values = r.latents.flatten().numpy()
        left.hist(values, bins=80, histtype="step", density=True, color=_colour(r.label),
                  label=f"{r.label} (std {r.metrics['latent']['std']:.3g}, kurtosis {r.metrics['latent']['excess_kurtosis']:.2g})")
        std = r.metrics["latent"]["channel_std"]
        right.bar(np.arange(len(std)) + (0.2 if r.variational else -0.2), std, width=0.4, color=_colour(r.label),
                  label=f"{r.label} channel std")
    left.set(xlabel="latent value", ylabel="density", yscale="log", title="latent values")
    right.set(xlabel="latent channel", ylabel="std over images and positions", title="per-channel spread")
    for ax in (left, right):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def posterior_channels(study: Study) -> plt.Figure | None:
    """The VAE's KL per latent channel and each channel's activity (variance of the posterior mean
    across layouts); channels under the dashed line are inactive."""
    vae = [r for r in study.models if r.variational]
    if not vae:
        return None
    r = vae[0]
    post = r.metrics["posterior"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.2))
    channels = np.arange(post["channels"])
    left.bar(channels, post["kl_per_channel"], color=_colour(r.label))
    left.set(xlabel="latent channel", ylabel="KL (nats per element)", title=f"{r.label}: KL per channel")
    right.bar(channels, r.metrics["channel_activity"], color=_colour(r.label))  # study: of the same means
    right.axhline(ACTIVE_UNIT_THRESHOLD, ls="--", color="k", lw=1, label=f"active-unit threshold {ACTIVE_UNIT_THRESHOLD:g}")
    right.set(xlabel="latent channel", ylabel="Var over layouts of posterior mean", yscale="log",
              title=f"{r.label}: {post['active_units']} of {post['channels']} channels active")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---- tables of the latent-space measurements ------------------------------------------------

def reconstruction_table(study: Study) -> pd.DataFrame:
    """Reconstruction quality and blur: one row per measure, one column per model and subset (all
    measured layouts, rooms, scenes), so that the table stays as wide as the page."""
    columns = {}
    for r in study.models:
        for subset, values in r.metrics["reconstruction"].items():
            columns[(r.label, subset)] = {
                "layouts": values["images"], "MSE": values["mse"], "PSNR (dB)": values["psnr"], "SSIM": values["ssim"],
                "mIoU": values["miou"], "pixel accuracy": values["pixel_accuracy"],
                "room/scene accuracy": values["classification_accuracy"], "sharpness ratio": values["sharpness_ratio"],
                "palette purity": values["palette_purity"],
            }
    table = pd.DataFrame(columns)
    table.columns.names = ["model", "layouts"]
    return table


def latent_table(study: Study) -> pd.DataFrame:
    """What a diffusion model trained on these latents would see, and the VAE's posterior health."""
    rows = {}
    for r in study.models:
        lat, post = r.metrics["latent"], r.metrics.get("posterior")
        activity = np.asarray(r.metrics["channel_activity"])
        rows[r.label] = {
            "latent mean": lat["mean"], "latent std": lat["std"], "scale factor (1/std)": lat["scale_factor"],
            "excess kurtosis": lat["excess_kurtosis"],
            "channel std min..max": f"{min(lat['channel_std']):.3g}..{max(lat['channel_std']):.3g}",
            f"active channels (var > {ACTIVE_UNIT_THRESHOLD:g})": f"{int((activity > ACTIVE_UNIT_THRESHOLD).sum())} of {len(activity)}",
            "KLD raw": f"{post['kld']:.4g}" if post else "n/a",
            "KLD weighted": f"{post['kld_weighted']:.3g}" if post else "n/a",
            "posterior collapse": ("yes" if post["collapsed"] else "no") if post else "n/a",
        }
    return pd.DataFrame(rows)


def interpolation_table(study: Study) -> pd.DataFrame:
    """Smoothness of the paths between the fixed pairs, averaged over pairs of each kind."""
    rows = {}
    for r in study.models:
        for path, info in r.metrics["interpolation"].items():
            for kind in ("all pairs", "room-room", "scene-scene", "room-scene"):
                values = info if kind == "all pairs" else info.get(kind)
                if values:
                    rows[(f"{r.label} {path}", kind)] = {
                        "path-length ratio": values["mean_path_length_ratio"],
                        "largest step share": values["mean_max_step_share"],
                        "midpoint palette purity": values["mean_midpoint_palette_purity"],
                        "midpoint seg. confidence": values["mean_midpoint_segmentation_confidence"],
                    }
    table = pd.DataFrame(rows).T
    table.index.names = ["model, path", "pairs"]
    return table


def criteria_table(decision: dict) -> pd.DataFrame:
    """Each decision criterion: V1's and V2's numbers, the compared value, threshold, verdict and
    what is compared (numbers to 3 significant digits, so that the table fits the page; show it
    with ``.style``, which does not cut the long cells short as a DataFrame's display does)."""

    def shown(value) -> str:
        if isinstance(value, (list, tuple)):
            return " to ".join(shown(v) for v in value)
        return f"{value:.3g}" if isinstance(value, float) else ("" if value is None else str(value))

    rows = {}
    for name, c in decision["criteria"].items():
        rows[name.replace("_", " ")] = {
            "V1": shown(c.get("deterministic")), "V2": shown(c.get("vae")), "value": shown(c["value"]),
            "threshold": shown(c["threshold"]), "verdict": c["verdict"], "what is compared": c["meaning"]}
    table = pd.DataFrame(rows).T
    table.index.name = "criterion"
    return table
