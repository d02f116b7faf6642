"""The probe's figures and tables for notebooks/diffusion_probe.ipynb, from probe_metrics.json."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from ..outputs import Outputs


def _label(metrics: dict, name: str) -> str:
    return metrics["experiments"][name]["label"]


def generated_layouts(metrics: dict, out: Outputs) -> plt.Figure:
    """Real validation layouts, then each latent space's generated layouts (the first of seed 0)."""
    panels = [("real (validation)", out.probe_real_grid)] + [
        (f"{_label(metrics, name)}: generated", out.probe_grid(name)) for name in metrics["experiments"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, path) in zip(axes[0], panels):
        ax.imshow(np.asarray(Image.open(path)), interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig


def _scores(metrics: dict, part: str, interval: bool) -> pd.DataFrame:
    rows = {}
    for name, result in metrics["experiments"].items():
        for key, score in result[part]["scores"].items():
            row = rows.setdefault(key, {"better": score.get("better", ""), "floor (real)": f"{score['floor']:.3g}"})
            text = f"{score['value']:.3g}"
            if interval and score["ci95"][0] is not None:
                text += f" [{score['ci95'][0]:.3g}, {score['ci95'][1]:.3g}]"
            row[_label(metrics, name)] = text
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "score"
    return table


def score_table(metrics: dict) -> pd.DataFrame:
    """Every score of the generated layouts with its 95 % CI over samples, beside the floor (real
    training layouts scored the same way: what a perfect generator gets)."""
    return _scores(metrics, "generated", interval=True)


def reconstruction_table(metrics: dict) -> pd.DataFrame:
    """The same scores for each autoencoder's reconstructions of real training layouts: the best
    its decoder allows, so that a bad generation score can be told apart from a bad decoder."""
    return _scores(metrics, "reconstructed", interval=False)


def heldout_loss_table(metrics: dict) -> pd.DataFrame:
    """The denoiser's held-out epsilon loss per timestep (of 1000), mean over probe seeds."""
    table = pd.DataFrame({_label(metrics, name): result["heldout_loss"]
                          for name, result in metrics["experiments"].items()})
    table.index.name = "timestep"
    return table


def loss_curves(metrics: dict) -> plt.Figure:
    """The denoiser's training loss (seed 0) per latent space."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, result in metrics["experiments"].items():
        curve = np.asarray(result["loss_curve"])
        ax.plot(curve[:, 0], curve[:, 1], label=_label(metrics, name))
    ax.set_xlabel("denoiser step")
    ax.set_ylabel("training loss (epsilon MSE)")
    ax.set_yscale("log")
    ax.set_title("How fast each latent space is learned (lower = easier to denoise)")
    ax.legend()
    fig.tight_layout()
    return fig


def diffusability_table(metrics: dict) -> pd.DataFrame:
    """The cheap measures, with the layouts' own high-frequency share as the reference."""
    labels = [_label(metrics, n) for n in metrics["experiments"]]
    rows = {"high-frequency share, layouts pooled to the latent grid":
            {label: metrics["layouts"]["high_frequency"]["share"] for label in labels}}
    for name, result in metrics["experiments"].items():
        label = _label(metrics, name)
        measures = result["diffusability"]
        rows.setdefault("high-frequency share, latents (encoder mean)", {})[label] = \
            measures["high_frequency"]["mean"]["share"]
        if "samples" in measures["high_frequency"]:
            rows.setdefault("high-frequency share, posterior samples", {})[label] = \
                measures["high_frequency"]["samples"]["share"]
        for transform, value in measures["equivariance"]["per_transform"].items():
            rows.setdefault(f"equivariance error, {transform}", {})[label] = value
        scale = measures["scale_consistency"]
        rows.setdefault("scale consistency: D(pool z) vs pool x, relative MSE", {})[label] = scale.get("relative_mse")
        rows.setdefault("reference: D(z) vs x, relative MSE", {})[label] = scale.get("reference_relative_mse")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "measure"
    return table


def key_numbers(metrics: dict) -> dict:
    """The probe's headline numbers the book's introduction quotes (``{glue}``), keyed by run label."""
    numbers = {}
    for result in metrics["experiments"].values():
        key = result["label"].lower()
        scores = result["generated"]["scores"]
        fld = scores["fld"]
        numbers.update({
            f"{key}_probe_fld": f"{fld['value']:.3g} [{fld['ci95'][0]:.3g}, {fld['ci95'][1]:.3g}]",
            f"{key}_probe_recon_fld": f"{result['reconstructed']['scores']['fld']['value']:.3g}",
            f"{key}_probe_precision_recall": f"{scores['precision']['value']:.2f} / {scores['recall']['value']:.2f}",
            f"{key}_probe_purity": f"{scores['palette_purity']['value']:.3f}",
            f"{key}_probe_heldout": float(np.mean(list(result["heldout_loss"].values()))),
        })
        numbers["probe_fld_floor"] = f"{fld['floor']:.3g}"
    return numbers
