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
    """Each latent space's generated layouts (the first grid of seed 0), side by side."""
    names = list(metrics["experiments"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.imshow(np.asarray(Image.open(out.probe_grid(name))), interpolation="nearest")
        ax.set_title(f"{_label(metrics, name)}: generated")
        ax.axis("off")
    fig.tight_layout()
    return fig


def score_table(metrics: dict) -> pd.DataFrame:
    """Every score of the generated layouts with its 95 % CI, each latent space's reconstructions
    (the best its decoder allows) and the floor (real training layouts: a perfect generator)."""
    rows = {}
    for name, result in metrics["experiments"].items():
        label = _label(metrics, name)
        for key, score in result["generated"]["scores"].items():
            row = rows.setdefault(key, {"better": score.get("better", "")})
            low, high = score["ci95"]
            row[f"{label} generated"] = f"{score['value']:.4g} [{low:.4g}, {high:.4g}]"
            row[f"{label} reconstructed"] = f"{result['reconstructed']['scores'][key]['value']:.4g}"
            row["floor (real)"] = f"{score['floor']:.4g}"
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "score"
    return table


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
    rows = {"high-frequency share, layouts pooled to the grid": {
        name_label: metrics["layouts"]["high_frequency"]["share"]
        for name_label in [_label(metrics, n) for n in metrics["experiments"]]}}
    for name, result in metrics["experiments"].items():
        label = _label(metrics, name)
        measures = result["diffusability"]
        rows.setdefault("high-frequency share, latent (mean)", {})[label] = measures["high_frequency"]["mean"]["share"]
        if "samples" in measures["high_frequency"]:
            rows.setdefault("high-frequency share, posterior samples", {})[label] = \
                measures["high_frequency"]["samples"]["share"]
        for transform, value in measures["equivariance"]["per_transform"].items():
            rows.setdefault(f"equivariance error, {transform}", {})[label] = value
        scale = measures["scale_consistency"]
        for key, value in scale.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.setdefault(f"scale consistency, {key}", {})[label] = value
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
