"""The probe's figures and tables for notebooks/diffusion_probe.ipynb, from probe_metrics.json."""

from __future__ import annotations

import dataclasses
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from ...outputs import Outputs
from .. import numbers
from ..numbers import interval, scale_for, scaled_name, sig
from ..results import ProbeMetrics
from .guard import GuardRule, guard_run


def _label(metrics: ProbeMetrics, name: str) -> str:
    """``V1 seed 42``: the arm and the autoencoder's training seed (a KL-sweep run: ``V2 KL 0.001
    seed 42``)."""
    result = metrics.experiments[name]
    label = f"{result['label']} KL {result['kld']:g}" if result.get("sweep") else result["label"]
    return f"{label} seed {result['training_seed']}" if "training_seed" in result else label


def comparison_runs(metrics: ProbeMetrics) -> tuple[ProbeMetrics, list[str]]:
    """(the probe's metrics with the comparison runs only, the KL-sweep runs left out): the
    probe's tables and headline numbers are of the V1-V2 comparison; the sweep's FLD is the
    analysis's KL-weight curve."""
    swept = [name for name, result in metrics.experiments.items() if result.get("sweep")]
    kept = {name: result for name, result in metrics.experiments.items() if name not in swept}
    return dataclasses.replace(metrics, experiments=kept), swept


# The run columns a table of the probe holds on the report's page: a study's 2 or 3 seeds a side fit
# one table; its 5 a side (ten columns) do not, and are shown one arm a table.
MAX_RUNS_PER_TABLE = 6


def run_groups(metrics: ProbeMetrics) -> list[ProbeMetrics]:
    """The probe's metrics as its per-run tables show them: every run in one table while they fit the
    page (``MAX_RUNS_PER_TABLE``), else one arm's runs a table, in the arms' order."""
    if len(metrics.experiments) <= MAX_RUNS_PER_TABLE:
        return [metrics]
    arms = list(dict.fromkeys(result["label"] for result in metrics.experiments.values()))
    return [
        dataclasses.replace(metrics, experiments={n: r for n, r in metrics.experiments.items() if r["label"] == arm})
        for arm in arms
    ]


def _first_of_each_arm(metrics: ProbeMetrics) -> list[str]:
    first: dict[str, str] = {}
    for name, result in metrics.experiments.items():
        first.setdefault(result["label"], name)
    return list(first.values())


def generated_layouts(metrics: ProbeMetrics, out: Outputs) -> plt.Figure:
    """Real test layouts, then the generated layouts of each arm's first run (the first of
    probe seed 0); every run's grid is in the probe folder."""
    panels = [("real (test)", out.probe_real_grid)] + [
        (f"{_label(metrics, name)}: generated", out.probe_grid(name)) for name in _first_of_each_arm(metrics)
    ]
    # Two grids a row, each half the page wide (the figure's 9.6 inches fill the page's column, about
    # 750 px), their titles about as large as the page's text once the figure is scaled to it; three
    # panels side by side made each grid a third as wide and its title about 10 px.
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(9.6, 5.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, path) in zip(axes.flat, panels):
        ax.imshow(np.asarray(Image.open(path)), interpolation="nearest")
        ax.set_title(title, fontsize=14)
        ax.axis("off")
    fig.tight_layout()
    return fig


def _scores(metrics: ProbeMetrics, part: str, interval_shown: bool) -> pd.DataFrame:
    """One row per score, one column per run, beside which way is better and the floor; each row on
    the scale its values need (``fld (× 10³)``), 3 significant figures."""
    rows: dict[str, dict[str, Any]] = {}
    for name, result in metrics.experiments.items():
        for key, score in result[part]["scores"].items():
            row = rows.setdefault(key, {"better": score.get("better", ""), "floor (real)": score["floor"]})
            low, high = score["ci95"] if interval_shown and score["ci95"][0] is not None else (None, None)
            row[_label(metrics, name)] = (score["value"], low, high)
    shown = {}
    for key, row in rows.items():
        values = [row["floor (real)"]] + [v for cell in row.values() if isinstance(cell, tuple) for v in cell]
        scale = scale_for(v for v in values if v is not None)
        shown[scaled_name(key.replace("_", " "), scale)] = {  # "class frequency distance": a name wraps
            column: interval(*cell, scale=scale)
            if isinstance(cell, tuple)
            else sig(cell, scale=scale)
            if column == "floor (real)"
            else cell
            for column, cell in row.items()
        }
    table = pd.DataFrame.from_dict(shown, orient="index")
    table.index.name = "score"
    return table


def score_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """Every score of the generated layouts with its 95 % CI over samples, beside the floor (real
    training layouts scored the same way: what a perfect generator gets)."""
    return _scores(metrics, "generated", interval_shown=True)


def reconstruction_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """The same scores for each autoencoder's reconstructions of real test layouts (never trained
    on), as many as it generated: the best its decoder allows, so that a bad generation score can be
    told apart from a bad decoder."""
    return _scores(metrics, "reconstructed", interval_shown=False)


def _two(value: float) -> str:
    """A ratio or share to 2 decimals, as the guard's flags write them (``0.30``), or to 3 significant
    figures where 2 decimals would read 0.00 (``0.0042``)."""
    return f"{value:.2f}" if value == 0 or 0.005 <= abs(value) < 10 else sig(value)


def _three(value: float) -> str:
    """A coverage to 3 decimals (``0.600``), or 3 significant figures where that would read 0.000."""
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.0005 else sig(value)


def guard_table(metrics: ProbeMetrics, rule: GuardRule) -> pd.DataFrame:
    """Each run's generations beside its own test reconstructions, at equal numbers of layouts,
    under every scorer seed: their FLDs (and the ratio) and coverages (and the generations' share
    of what as many real layouts cover), and the guard's reading under ``rule``, the decision's
    (``analysis.criteria.Rule()``: its thresholds, none fixed here): "collapsed or fooled" where
    the generations score better than the reconstructions beyond the rule's margin, "too far from
    real" where they cover too little for the FLD to inform. A run probed before the guard existed
    says so."""
    rows: dict[str, dict[str, Any]] = {}
    for name in metrics.experiments:
        label = _label(metrics, name)
        record = metrics.guard(name)
        found = guard_run(name, record, rule, label)
        verdict = "; ".join(flag.removeprefix(f"{label}: ") for flag in found["flags"]) or "ok"
        if record is None:
            rows.setdefault("guard", {})[label] = verdict
            continue
        rows.setdefault("layouts each (generated, reconstructed)", {})[label] = str(record["n_layouts"])
        for seed, s in record["by_scorer"].items():
            ratio = found["fld_ratio_by_scorer"].get(seed)
            rows.setdefault(f"FLD generated / reconstructed, scorer seed {seed}", {})[label] = (
                s["generated_fld"],
                s["reconstructed_fld"],
                ratio,
            )
            rows.setdefault(f"coverage generated / reconstructed / real, scorer seed {seed}", {})[label] = " / ".join(
                _three(s[k]) for k in ("generated_coverage", "reconstructed_coverage", "coverage_floor")
            )
        if found["fld_ratio"] is not None:
            rows.setdefault(f"FLD ratio, geometric mean (flagged below {rule.guard_fld_ratio:g})", {})[label] = _two(
                found["fld_ratio"]
            )
        if found["coverage_share"] is not None:
            rows.setdefault(f"coverage share of real, mean (flagged below {rule.guard_coverage_share:g})", {})[
                label
            ] = _two(found["coverage_share"])
        rows.setdefault("guard", {})[label] = verdict
    shown = {}
    for key, row in rows.items():  # the FLDs of a row on one scale (one scorer's FLDs can run to 10^10)
        pairs = [cell for cell in row.values() if isinstance(cell, tuple)]
        scale = scale_for(v for generated, reconstructed, _ in pairs for v in (generated, reconstructed))
        shown[scaled_name(key, scale)] = {
            label: f"{sig(cell[0], scale=scale)} / {sig(cell[1], scale=scale)}"
            + (f" ({_two(cell[2])} x)" if cell[2] else "")
            if isinstance(cell, tuple)
            else cell
            for label, cell in row.items()
        }
    table = pd.DataFrame.from_dict(shown, orient="index")
    table.index.name = "generations against test reconstructions"
    return table


def robustness_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """The primary endpoint (FLD of the generated layouts) as the instrument's own choices move it:
    measured by each scorer seed's feature network, and after each denoiser budget. A comparison
    of latent spaces that holds in every row does not rest on one scorer or one budget; FLDs of
    different scorer seeds are in different feature spaces, so compare within a row, not across."""
    rows: dict[str, dict[str, Any]] = {}
    for name, result in metrics.experiments.items():
        label = _label(metrics, name)
        generated = result["generated"]
        floors = generated.get("fld_floor_by_scorer", {})
        for seed, value in generated.get("fld_by_scorer", {}).items():
            rows.setdefault(f"FLD, scorer seed {seed}", {"floor": floors.get(seed)})[label] = (value, None, None)
        for steps, budget in result.get("budgets", {}).items():
            key = f"FLD after {steps} denoiser steps (scorer seed {metrics.settings['seed']})"
            rows.setdefault(key, {"floor": None})[label] = (budget["fld"], *budget["fld_ci95"])
    shown = {}
    for key, row in rows.items():
        floor = row.pop("floor")
        scale = scale_for(v for cell in row.values() for v in (*cell, floor) if v is not None)
        named = key + (f" (floor {sig(floor, scale=scale)})" if floor is not None else "")
        shown[scaled_name(named, scale)] = {label: interval(*cell, scale=scale) for label, cell in row.items()}
    table = pd.DataFrame.from_dict(shown, orient="index")
    table.index.name = "primary endpoint"
    return table


def memorisation_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """Copies of training layouts among the generated ones (first budget), searched in every
    training layout, beside the rate at which new real layouts look like copies (the floor)."""
    rows: dict[str, dict[str, str]] = {}

    def share(value: float, bounds: list) -> str:
        return f"{_three(value)} [{_three(bounds[0])} to {_three(bounds[1])}]"

    for name, result in metrics.experiments.items():
        copies = result["generated"].get("memorisation")
        if copies is None:
            continue
        label = _label(metrics, name)
        rows.setdefault("exact copies (share, 95 % CI)", {})[label] = share(
            copies["exact_copy_share"], copies["exact_copy_ci95"]
        )
        rows.setdefault("near copies (share, 95 % CI)", {})[label] = share(
            copies["near_copy_share"], copies["near_copy_ci95"]
        )
        rows.setdefault("held-out real layouts: near copies (floor)", {})[label] = _three(
            copies["heldout_near_copy_share"]
        )
        rows.setdefault("held-out real layouts: exact copies", {})[label] = _three(copies["heldout_exact_copy_share"])
        rows.setdefault("near-copy threshold (share of cells)", {})[label] = _three(copies["near_copy_threshold"])
        rows.setdefault("median distance to the nearest training layout", {})[label] = (
            f"{_three(copies['median_distance'])} (real: {_three(copies['heldout_median_distance'])})"
        )
        rows.setdefault("training layouts searched", {})[label] = sig(int(copies["training_layouts_searched"]))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "copies of training layouts"
    return table


def timings_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """Seconds per phase of the probe, per run, and the phases shared by all runs."""
    columns = {_label(metrics, name): result.get("timings", {}) for name, result in metrics.experiments.items()}
    columns["shared by all runs"] = {
        k: v for k, v in metrics.timings.items() if isinstance(v, (int, float)) and k != "total"
    }
    table = pd.DataFrame(columns)
    table.index.name = "seconds"
    return numbers.table(table)


def heldout_loss_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """The denoiser's held-out epsilon loss per timestep (of 1000), mean over probe seeds."""
    table = pd.DataFrame(
        {_label(metrics, name): result["heldout_loss"] for name, result in metrics.experiments.items()}
    )
    table.index.name = "timestep"
    return numbers.table(table)


def loss_curves(metrics: ProbeMetrics) -> plt.Figure:
    """The denoiser's training loss (seed 0) per latent space."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, result in metrics.experiments.items():
        curve = np.asarray(result["loss_curve"])
        ax.plot(curve[:, 0], curve[:, 1], label=_label(metrics, name))
    ax.set_xlabel("denoiser step")
    ax.set_ylabel("training loss (epsilon MSE)")
    ax.set_yscale("log")
    ax.set_title("How fast each latent space is learned (lower = easier to denoise)")
    ax.legend()
    fig.tight_layout()
    return fig


def diffusability_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """The cheap measures, with the layouts' own high-frequency share as the reference."""
    labels = [_label(metrics, n) for n in metrics.experiments]
    rows = {
        "high-frequency share, layouts pooled to the latent grid": {
            label: metrics.layouts["high_frequency"]["share"] for label in labels
        }
    }
    for name, result in metrics.experiments.items():
        label = _label(metrics, name)
        measures = result["diffusability"]
        rows.setdefault("high-frequency share, latents (encoder mean)", {})[label] = measures["high_frequency"]["mean"][
            "share"
        ]
        if "samples" in measures["high_frequency"]:
            rows.setdefault("high-frequency share, posterior samples", {})[label] = measures["high_frequency"][
                "samples"
            ]["share"]
        for transform, value in measures["equivariance"]["per_transform"].items():
            rows.setdefault(f"equivariance error, {transform}", {})[label] = value
        scale = measures["scale_consistency"]
        rows.setdefault("scale consistency: D(pool z) vs pool x, relative MSE", {})[label] = scale.get("relative_mse")
        rows.setdefault("reference: D(z) vs x, relative MSE", {})[label] = scale.get("reference_relative_mse")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "measure"
    return numbers.table(table, by="row")


def key_numbers(metrics: ProbeMetrics) -> dict:
    """The probe's headline numbers the book's introduction quotes (``{glue}``), per arm: the mean
    over its runs, and each run's value (the decision's interval and guard are in the analysis);
    the reconstructions' FLD is of test layouts."""
    arms: dict[str, list[str]] = {}
    for name, result in metrics.experiments.items():
        arms.setdefault(result["label"], []).append(name)
    quoted = {}
    for label, names in arms.items():
        key = label.lower()
        results = [metrics.experiments[name] for name in names]

        def mean_and_runs(values: list[float]) -> str:
            text = sig(float(np.mean(values)))
            return text + (f" ({', '.join(sig(v) for v in values)})" if len(values) > 1 else "")

        generated = [r["generated"]["scores"] for r in results]
        quoted.update(
            {
                f"{key}_probe_fld": mean_and_runs([g["fld"]["value"] for g in generated]),
                f"{key}_probe_recon_fld": mean_and_runs(
                    [r["reconstructed"]["scores"]["fld"]["value"] for r in results]
                ),
                f"{key}_probe_precision_recall": " / ".join(
                    sig(float(np.mean([g[k]["value"] for g in generated]))) for k in ("precision", "recall")
                ),
                f"{key}_probe_purity": mean_and_runs([g["palette_purity"]["value"] for g in generated]),
                f"{key}_probe_heldout": float(np.mean([np.mean(list(r["heldout_loss"].values())) for r in results])),
            }
        )
        quoted["probe_fld_floor"] = sig(generated[0]["fld"]["floor"])
    return quoted
