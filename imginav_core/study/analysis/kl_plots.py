"""The KL-weight curve's figure and table (analysis.ipynb's secondary result, ``sweep.KLSweep``)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from ..arms import decision_arms
from ..numbers import interval, scale_for, scaled_name
from .plots import _colour
from .sweep import KLSweep, weight_text

SWEEP_PANELS = (
    ("fld", "probe FLD (lower is better)"),
    ("mse", "reconstruction MSE (lower is better)"),
    ("small_class_iou", "small-class IoU (higher is better)"),
    ("kl_nats_per_element", "KL, nats per latent element"),
    ("active_share", "active units (share)"),
)


def kl_positions(weights: list[float], gap: float = 1.5) -> dict[float, float]:
    """Where each KL weight sits on the curve's axis: log10 of the weight; 0 (the deterministic
    encoder, which no log axis holds) drawn apart, ``gap`` decades left of the smallest positive
    weight."""
    positive = [w for w in weights if w > 0]
    left = math.log10(min(positive)) if positive else 0.0
    return {w: math.log10(w) if w > 0 else left - gap for w in weights}


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


def _estimate(value, scale: int = 0) -> str:
    """An estimate with its 95 % interval over the runs (none with one run): ``0.0523 [0.041 to 0.066]``."""
    if value.estimate is None:
        return "—"
    return interval(value.estimate, *(value.ci95 or (None, None)), scale=scale)


def kl_curve_table(sweep: KLSweep) -> pd.DataFrame:
    """The curve's numbers, one row per KL weight: each value with its 95 % interval over the runs
    (none with one run), and the decision's reconstruction criteria against V1 (the verdict).
    Short headers, so that nine columns fit the book's page without breaking words; a column's
    scale in its header where its values are tiny or huge (``numbers``)."""
    measures = {
        "FLD": "fld",
        "MSE": "mse",
        "small IoU": "small_class_iou",
        "KL nats": "kl_nats_per_element",
        "active": "active_share",
    }
    scales = {
        header: scale_for(
            v
            for point in sweep.curve
            for e in [getattr(point, key)]
            if e.estimate is not None
            for v in [e.estimate, *(e.ci95 or ())]
        )
        for header, key in measures.items()
    }
    rows = []
    for point in sweep.curve:
        verdicts = {name: c["verdict"] for name, c in point.non_inferiority.items()}
        rows.append(
            {
                "KL weight": point.label,
                "n": len(point.runs),
                **{
                    scaled_name(header, scales[header]): _estimate(getattr(point, key), scales[header])
                    for header, key in measures.items()
                },
                "MSE vs V1": verdicts.get("reconstruction_mse", "reference"),
                "IoU vs V1": verdicts.get("small_class_iou", "reference"),
            }
        )
    return pd.DataFrame(rows).set_index("KL weight")
