"""Figures and tables of the notebooks. Each function returns a matplotlib Figure (or a
DataFrame) and draws nothing the caption in the notebook does not explain."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ...data.manifest import LayoutRecord
from .. import numbers
from ..arms import decision_arms, study_arms
from ..numbers import interval, percent, sig
from ..results import Decision
from ..runs import RunSummary
from .measures import ACTIVE_UNIT_THRESHOLD
from .study import Study

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
    return numbers.table(table, by="row")


def latent_table(study: Study, arm: str | None = None) -> pd.DataFrame:
    """What a diffusion model trained on each space would see, and the VAE's posterior, each run
    a column (``arm``: that arm's runs only, so that five seeds a side fit the page; the posterior's
    rows then only where the arm has one). Descriptive, apart from posterior collapse (a flag of the
    decision)."""
    rows = {}
    for r in study.models if arm is None else study.arm(arm):
        lat, post = r.metrics["latent"], r.metrics.get("posterior")
        row = {
            "what a diffusion model sees": lat["of"],
            "std": lat["std"],
            "scale factor (1/std)": lat["scale_factor"],
            "channel std min..max": f"{sig(min(lat['channel_std']))}..{sig(max(lat['channel_std']))}",
            "excess kurtosis per channel, median (max)": (
                f"{sig(lat['median_channel_excess_kurtosis'], 2)} ({sig(lat['max_channel_excess_kurtosis'], 2)})"
            ),
        }
        if post:
            row |= {
                "KL (nats per latent element)": post["kl_nats_per_element"],
                "KL (bits per pixel)": post["kl_bits_per_pixel"],
                "KL weighted (band 1e-4..1e-3)": post["kl_weighted"],
                "KL share of the validation loss": percent(post["kl_share_of_loss"], 2),
                f"active units (var > {ACTIVE_UNIT_THRESHOLD:g})": f"{post['active_units']:,} of {post['units']:,} "
                f"({percent(post['active_share'])})",
                "posterior noise / spread of means (median channel)": post["median_noise_to_signal"],
                "posterior collapse": "yes" if post["collapsed"] else "no",
            }
        rows[f"{r.label} seed {r.seed}"] = row
    values = pd.DataFrame(rows)
    table = numbers.table(values, by="row")  # a row's scale in its name (KL weighted: x 10^-6)
    table = table.mask(values.isna().to_numpy(), "n/a (deterministic)")
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
    return numbers.table(table)


def _shown(value) -> str:
    return "" if value is None else sig(value)


def _counts(c: dict) -> str:
    """What n is: the runs for the primary endpoint, else seeds and items."""
    if c.get("n_runs"):
        return f"{'+'.join(map(str, c['n_runs']))} runs"
    return f"{'+'.join(map(str, c['n_seeds']))} seeds, {c['n_images']}"


def criteria_table(decision: Decision, meanings: bool = True) -> pd.DataFrame:
    """Each criterion of the rule and its role, each arm's mean over its seeds, the difference (VAE
    minus deterministic; relative where said) with its 95 % interval, the true difference the
    design would see with the rule's power, both ways (``<= 0.34 x or >= 2.97 x``: V2 / V1 at most
    or at least that, for a relative criterion; V2 - V1 for the others), the verdict (against the
    margin, if any; "not assessable" where a relative margin cannot be judged), what n is (runs for
    the probe's FLD; seeds and images or pairs for the others), and what is compared (each seed's
    value: decision.json). ``meanings`` False: without that last column, whose long cells the report
    shows apart (``criteria_meanings``), so that the numbers' columns fit the page."""

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
        between = c.get("ci95")
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
            difference = f"{_shown(c['estimate'])} [{_shown(between[0])} to {_shown(between[1])}]{relative}"
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
    return table if meanings else table.drop(columns="what is compared")


def criteria_meanings(decision: Decision) -> pd.DataFrame:
    """What each criterion of ``criteria_table`` compares (each seed's value, as decision.json
    holds it), one row per criterion, named as there."""
    return criteria_table(decision)[["what is compared"]]


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
        shown = f"{interval(1 + primary['estimate'], low, high)} ({primary['verdict']})"
    rows["all checks (the primary, with its interval)"] = {
        "V2 / V1": shown,
        "favours the same arm as the primary": "not measured" if holds is None else holds,
    }
    table = pd.DataFrame(rows).T
    table.index.name = f"{decision.primary_endpoint.replace('_', ' ')}: robustness"
    if robustness.get("note"):
        table.attrs["note"] = robustness["note"]
    return table
