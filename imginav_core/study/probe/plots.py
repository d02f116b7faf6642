"""The probe's figures and tables for notebooks/diffusion_probe.ipynb, from probe_metrics.json."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from ...outputs import Outputs
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
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, path) in zip(axes[0], panels):
        ax.imshow(np.asarray(Image.open(path)), interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig


def _scores(metrics: ProbeMetrics, part: str, interval: bool) -> pd.DataFrame:
    rows = {}
    for name, result in metrics.experiments.items():
        for key, score in result[part]["scores"].items():
            row = rows.setdefault(key, {"better": score.get("better", ""), "floor (real)": f"{score['floor']:.3g}"})
            text = f"{score['value']:.3g}"
            if interval and score["ci95"][0] is not None:
                text += f" [{score['ci95'][0]:.3g}, {score['ci95'][1]:.3g}]"
            row[_label(metrics, name)] = text
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "score"
    return table


def score_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """Every score of the generated layouts with its 95 % CI over samples, beside the floor (real
    training layouts scored the same way: what a perfect generator gets)."""
    return _scores(metrics, "generated", interval=True)


def reconstruction_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """The same scores for each autoencoder's reconstructions of real test layouts (never trained
    on), as many as it generated: the best its decoder allows, so that a bad generation score can be
    told apart from a bad decoder."""
    return _scores(metrics, "reconstructed", interval=False)


def guard_table(metrics: ProbeMetrics, rule: GuardRule) -> pd.DataFrame:
    """Each run's generations beside its own test reconstructions, at equal numbers of layouts,
    under every scorer seed: their FLDs (and the ratio) and coverages (and the generations' share
    of what as many real layouts cover), and the guard's reading under ``rule``, the decision's
    (``analysis.criteria.Rule()``: its thresholds, none fixed here): "collapsed or fooled" where
    the generations score better than the reconstructions beyond the rule's margin, "too far from
    real" where they cover too little for the FLD to inform. A run probed before the guard existed
    says so."""
    rows: dict[str, dict[str, str]] = {}
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
                f"{s['generated_fld']:.3g} / {s['reconstructed_fld']:.3g}" + (f" ({ratio:.2f} x)" if ratio else "")
            )
            rows.setdefault(f"coverage generated / reconstructed / real, scorer seed {seed}", {})[label] = (
                f"{s['generated_coverage']:.3f} / {s['reconstructed_coverage']:.3f} / {s['coverage_floor']:.3f}"
            )
        if found["fld_ratio"] is not None:
            rows.setdefault(f"FLD ratio, geometric mean (flagged below {rule.guard_fld_ratio:g})", {})[label] = (
                f"{found['fld_ratio']:.2f}"
            )
        if found["coverage_share"] is not None:
            rows.setdefault(f"coverage share of real, mean (flagged below {rule.guard_coverage_share:g})", {})[
                label
            ] = f"{found['coverage_share']:.2f}"
        rows.setdefault("guard", {})[label] = verdict
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "generations against test reconstructions"
    return table


def robustness_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """The primary endpoint (FLD of the generated layouts) as the instrument's own choices move it:
    measured by each scorer seed's feature network, and after each denoiser budget. A comparison
    of latent spaces that holds in every row does not rest on one scorer or one budget; FLDs of
    different scorer seeds are in different feature spaces, so compare within a row, not across."""
    rows: dict[str, dict[str, str]] = {}
    for name, result in metrics.experiments.items():
        label = _label(metrics, name)
        generated = result["generated"]
        floors = generated.get("fld_floor_by_scorer", {})
        for seed, value in generated.get("fld_by_scorer", {}).items():
            floor = floors.get(seed)
            key = f"FLD, scorer seed {seed}" + (f" (floor {floor:.3g})" if floor is not None else "")
            rows.setdefault(key, {})[label] = f"{value:.3g}"
        for steps, budget in result.get("budgets", {}).items():
            low, high = budget["fld_ci95"]
            interval = f" [{low:.3g}, {high:.3g}]" if low is not None else ""
            rows.setdefault(f"FLD after {steps} denoiser steps (scorer seed {metrics.settings['seed']})", {})[label] = (
                f"{budget['fld']:.3g}{interval}"
            )
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "primary endpoint"
    return table


def memorisation_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """Copies of training layouts among the generated ones (first budget), searched in every
    training layout, beside the rate at which new real layouts look like copies (the floor)."""
    rows: dict[str, dict[str, str]] = {}

    def share(value: float, interval: list) -> str:
        return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"

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
        rows.setdefault("held-out real layouts: near copies (floor)", {})[label] = (
            f"{copies['heldout_near_copy_share']:.3f}"
        )
        rows.setdefault("held-out real layouts: exact copies", {})[label] = f"{copies['heldout_exact_copy_share']:.3f}"
        rows.setdefault("near-copy threshold (share of cells)", {})[label] = f"{copies['near_copy_threshold']:.3f}"
        rows.setdefault("median distance to the nearest training layout", {})[label] = (
            f"{copies['median_distance']:.3f} (real: {copies['heldout_median_distance']:.3f})"
        )
        rows.setdefault("training layouts searched", {})[label] = str(copies["training_layouts_searched"])
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
    return table


def heldout_loss_table(metrics: ProbeMetrics) -> pd.DataFrame:
    """The denoiser's held-out epsilon loss per timestep (of 1000), mean over probe seeds."""
    table = pd.DataFrame(
        {_label(metrics, name): result["heldout_loss"] for name, result in metrics.experiments.items()}
    )
    table.index.name = "timestep"
    return table


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
    return table


def key_numbers(metrics: ProbeMetrics) -> dict:
    """The probe's headline numbers the book's introduction quotes (``{glue}``), per arm: the mean
    over its runs, and each run's value (the decision's interval and guard are in the analysis);
    the reconstructions' FLD is of test layouts."""
    arms: dict[str, list[str]] = {}
    for name, result in metrics.experiments.items():
        arms.setdefault(result["label"], []).append(name)
    numbers = {}
    for label, names in arms.items():
        key = label.lower()
        results = [metrics.experiments[name] for name in names]

        def mean_and_runs(values: list[float], digits: str = ".3g") -> str:
            text = f"{np.mean(values):{digits}}"
            return text + (f" ({', '.join(f'{v:{digits}}' for v in values)})" if len(values) > 1 else "")

        generated = [r["generated"]["scores"] for r in results]
        numbers.update(
            {
                f"{key}_probe_fld": mean_and_runs([g["fld"]["value"] for g in generated]),
                f"{key}_probe_recon_fld": mean_and_runs(
                    [r["reconstructed"]["scores"]["fld"]["value"] for r in results]
                ),
                f"{key}_probe_precision_recall": f"{np.mean([g['precision']['value'] for g in generated]):.2f} / "
                f"{np.mean([g['recall']['value'] for g in generated]):.2f}",
                f"{key}_probe_purity": mean_and_runs([g["palette_purity"]["value"] for g in generated], ".3f"),
                f"{key}_probe_heldout": float(np.mean([np.mean(list(r["heldout_loss"].values())) for r in results])),
            }
        )
        numbers["probe_fld_floor"] = f"{generated[0]['fld']['floor']:.3g}"
    return numbers
