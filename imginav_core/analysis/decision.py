"""The Phase 1.2 decision as a rule fixed before the data is seen (every threshold a named field
of ``Rule``).

- **Primary endpoint:** what a latent diffusion model generates in each space, the probe's FLD
  (lower is better), when the probe ran; without it, the validity of the midpoint between each
  validation layout's latent and its nearest training latent (palette purity, higher is better).
- **Non-inferiority:** the VAE's reconstruction may be worse only within named margins: the
  validation MSE (relative) and the IoU of the small classes (chair, lighting, pier / stool).
- **Intervals:** 95 % hierarchical-bootstrap intervals (seeds, then scenes, then images) of the
  paired per-image differences, VAE minus deterministic (``stats.arm_difference``).

The VAE is chosen only when its primary endpoint is better with the interval excluding zero,
non-inferiority holds on every margin and its posterior has not collapsed. Otherwise the
deterministic encoder (simpler, faster, more direct), saying whether the VAE was shown worse
(an interval entirely on the wrong side) or the data cannot tell (inconclusive). Everything else
(SSIM, sharpness, palette purity, latent noise, interpolation paths, the KL band) is reported
with its interval and flags, and does not decide.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import config_from_dict
from ..files import write_text_atomic
from ..outputs import Outputs
from ..stats import PerImage, arm_difference, run_difference
from .criteria import Measure, image_criteria
from .runs import RunSummary
from .study import Study


@dataclass(frozen=True)
class Rule:
    # Non-inferiority: the VAE's validation MSE at most this much higher (relative, upper CI bound).
    mse_margin: float = 0.25
    # ... and its IoU of the small classes at most this much lower (absolute, lower CI bound).
    small_class_iou_margin: float = 0.05
    # The noise level of the reported latent-noise criterion (in each channel's own std).
    noise_sigma: float = 0.5
    # The specification's band for the weighted KL: at a fixed weight a KL below it means the
    # posterior is near the prior (towards collapse), above it barely regularised.
    kld_low: float = 1e-4
    kld_high: float = 1e-3
    resamples: int = 2000
    seed: int = 0
    # Below these the data cannot settle the question (e.g. the small synthetic default).
    min_train_images: int = 5000
    min_resolution: int = 256
    min_epochs: int = 5


def _per_image(study: Study, label: str, key: str, denominator: str | None = None) -> PerImage:
    runs = study.arm(label)
    if denominator is None:
        return PerImage.mean_of(np.stack([r.per_image[key] for r in runs]))
    num = np.stack([np.atleast_2d(r.per_image[key].T).T for r in runs])
    den = np.stack([np.atleast_2d(r.per_image[denominator].T).T for r in runs])
    return PerImage(num, den)


def _per_pair(study: Study, label: str, key: str) -> PerImage:
    return PerImage.mean_of(np.stack([[p[key] for p in r.metrics["interpolation"]["pairs"]] for r in study.arm(label)]))


def _arm_values(data: PerImage) -> list[float]:
    """Each seed's value over all items."""
    return data.per_seed(np.ones((1, data.numerator.shape[1])))[0].tolist()


def _verdict(measure: Measure, interval: dict, margin: float | None) -> str:
    """Better / worse / inconclusive (primary and secondary); non-inferior / inferior /
    inconclusive against a margin (non-inferiority)."""
    low, high = interval["ci95"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    if measure.role == "non-inferiority":
        # the margin is how much worse the VAE may be: above it for "lower", below it for "higher"
        if measure.better == "lower":
            return "non-inferior" if high <= margin else "inferior" if low > margin else "inconclusive"
        return "non-inferior" if low >= -margin else "inferior" if high < -margin else "inconclusive"
    vae_better = high < 0 if measure.better == "lower" else low > 0
    vae_worse = low > 0 if measure.better == "lower" else high < 0
    return "vae better" if vae_better else "vae worse" if vae_worse else "inconclusive"


def _probe_scores(probe: dict, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each run's generated-layout FLD and its sampling standard error (from its 95 % interval)."""
    values, errors = [], []
    for name in names:
        score = probe["experiments"][name]["generated"]["scores"]["fld"]
        low, high = score["ci95"]
        values.append(score["value"])
        errors.append((high - low) / (2 * 1.96) if low is not None and high is not None else 0.0)
    return np.array(values, dtype=float), np.array(errors, dtype=float)


def _criteria(study: Study, probe: dict | None, rule: Rule) -> dict[str, dict[str, Any]]:
    with_realism = "nn_midpoint_realism" in study.models[0].per_image  # the layout scorer judged them too
    measures = image_criteria(
        rule.mse_margin,
        rule.small_class_iou_margin,
        rule.noise_sigma,
        nn_primary=probe is None,
        with_realism=with_realism,
    )
    criteria: dict[str, dict[str, Any]] = {}
    if probe is not None:
        measure = Measure(
            "generation_fld",
            "primary",
            "FLD of the layouts a latent diffusion model generates in "
            "the space (the diffusion probe), against validation layouts",
            "lower",
        )
        a, a_se = _probe_scores(probe, [r.name for r in study.arm("V1")])
        b, b_se = _probe_scores(probe, [r.name for r in study.arm("V2")])
        interval = run_difference(a, a_se, b, b_se, resamples=rule.resamples, level=0.95, seed=rule.seed)
        criteria[measure.name] = {
            "role": measure.role,
            "meaning": measure.meaning,
            "better": measure.better,
            **interval,
            # generated layouts per arm: samples x probe seeds x runs
            "n_images": int(probe["settings"]["samples"]) * int(probe["settings"]["seeds"]) * len(a),
            "deterministic": a.tolist(),
            "vae": b.tolist(),
            "verdict": _verdict(measure, interval, None),
        }
    for measure, (key, denominator), margin in measures:
        if measure.per == "pair":  # pairs are the items, each its own group
            a, b = _per_pair(study, "V1", key), _per_pair(study, "V2", key)
            item_groups = np.arange(len(study.pairs))
        else:  # layouts are the items, resampled scene by scene
            a, b = _per_image(study, "V1", key, denominator), _per_image(study, "V2", key, denominator)
            item_groups = study.scene_ids
        interval = arm_difference(
            a, b, item_groups, relative=measure.relative, resamples=rule.resamples, seed=rule.seed
        )
        criteria[measure.name] = {
            "role": measure.role,
            "meaning": measure.meaning,
            "better": measure.better,
            **interval,
            "margin": margin,
            "relative": measure.relative,
            "deterministic": _arm_values(a),
            "vae": _arm_values(b),
            "verdict": _verdict(measure, interval, margin),
        }
    return criteria


def _posterior_flags(study: Study, rule: Rule, criteria: dict) -> tuple[list[str], bool]:
    flags, collapsed = [], False
    for r in study.arm("V2"):
        post = r.metrics.get("posterior")
        if not post:
            continue
        kl = post["kl_weighted"]
        if kl < rule.kld_low:
            flags.append(
                f"{r.name}: weighted KL {kl:.2e} is below {rule.kld_low:g}: the posterior is near the prior "
                f"({post['kl_nats_per_element']:.3g} nats per latent element), towards collapse"
            )
        elif kl > rule.kld_high:
            flags.append(
                f"{r.name}: weighted KL {kl:.2e} is above {rule.kld_high:g}: the KL barely regularises "
                f"({post['kl_nats_per_element']:.3g} nats per latent element)"
            )
        if post["collapsed"]:
            collapsed = True
            flags.append(f"{r.name}: posterior collapse: {post['active_units']} of {post['units']} latent units active")
    posts = [r.metrics["posterior"] for r in study.arm("V2") if "posterior" in r.metrics]
    if posts:
        criteria["kl"] = {
            "role": "flag",
            "meaning": "the VAE's KL: weighted (band "
            f"{rule.kld_low:g}..{rule.kld_high:g}), in nats per latent element, bits per pixel, "
            "share of the validation loss",
            "kl_weighted": [p["kl_weighted"] for p in posts],
            "kl_nats_per_element": [p["kl_nats_per_element"] for p in posts],
            "kl_bits_per_pixel": [p["kl_bits_per_pixel"] for p in posts],
            "kl_share_of_loss": [p["kl_share_of_loss"] for p in posts],
            "verdict": "flag" if any(not rule.kld_low <= p["kl_weighted"] <= rule.kld_high for p in posts) else "ok",
            "n_seeds": [0, len(posts)],
            "n_images": len(study.positions),
            "ci95": None,
        }
        criteria["active_units"] = {
            "role": "flag",
            "meaning": "share of the VAE's latent units whose posterior mean "
            "varies across layouts (Burda et al. 2016); collapse below 5 %",
            "vae": [p["active_share"] for p in posts],
            "verdict": "flag" if collapsed else "ok",
            "n_seeds": [0, len(posts)],
            "n_images": len(study.positions),
            "ci95": None,
        }
    return flags, collapsed


def decide(
    study: Study,
    runs: dict[str, list[RunSummary]],
    train_images: int,
    probe: dict | None = None,
    rule: Rule = Rule(),
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The decision record (``decision.json``'s content) for the deterministic arm (V1) and the
    variational arm (V2), each one run per seed, measured in ``study``."""
    if not study.arm("V1") or not study.arm("V2"):
        raise ValueError(
            "the decision compares a deterministic arm (V1) and a variational arm (V2); got runs "
            f"{[r.name for r in study.models]}"
        )
    wrong = [r.name for r in study.arm("V1") if r.variational] + [r.name for r in study.arm("V2") if not r.variational]
    if wrong:
        raise ValueError(f"runs in the wrong arm (V1 must be deterministic, V2 variational): {wrong}")
    criteria = _criteria(study, probe, rule)
    flags = list(warnings or [])
    posterior_flags, collapsed = _posterior_flags(study, rule, criteria)
    flags += posterior_flags
    flags += recipe_flags([run for label in ("V1", "V2") for run in runs[label]])

    primary_name = "generation_fld" if probe is not None else "nearest_neighbour_validity"
    primary = criteria[primary_name]
    margins = {k: c for k, c in criteria.items() if c["role"] == "non-inferiority"}
    seeds_known = all(c.get("seed_spread_known", True) for c in criteria.values() if c["role"] != "flag")
    non_inferior = all(c["verdict"] == "non-inferior" for c in margins.values())
    inferior = [k for k, c in margins.items() if c["verdict"] == "inferior"]

    if collapsed:
        verdict, reason = "vae worse", "the VAE's posterior collapsed"
    elif not seeds_known:
        verdict, reason = (
            "inconclusive",
            (
                "one seed in an arm: the run-to-run spread is unknown, so no difference "
                "can be told from it; train at least 2 seeds per arm (3 by default)"
            ),
        )
    elif primary["verdict"] == "vae better" and non_inferior:
        verdict, reason = (
            "vae better",
            (
                f"the VAE is better on the primary endpoint ({primary_name}), its 95 % "
                "interval excluding zero, and non-inferior in reconstruction"
            ),
        )
    elif primary["verdict"] == "vae worse" or inferior:
        worse = ([f"worse on the primary endpoint ({primary_name})"] if primary["verdict"] == "vae worse" else []) + [
            f"inferior beyond the margin on {k}" for k in inferior
        ]
        verdict, reason = "vae worse", "the VAE was shown " + " and ".join(worse)
    else:
        open_ = (
            [f"the primary endpoint ({primary_name}) interval includes zero"]
            if primary["verdict"] != "vae better"
            else []
        ) + [f"non-inferiority on {k} is not shown" for k, c in margins.items() if c["verdict"] != "non-inferior"]
        verdict, reason = "inconclusive", "inconclusive: " + "; ".join(open_)
    choice = "variational" if verdict == "vae better" else "deterministic"
    chosen = study.arm("V2" if choice == "variational" else "V1")[0]

    any_run = runs["V1"][0]
    epochs = min(run.epochs_run for label in ("V1", "V2") for run in runs[label])
    too_little = []
    if train_images < rule.min_train_images:
        too_little.append(f"{train_images} training layouts (< {rule.min_train_images})")
    if any_run.config.data.resolution < rule.min_resolution:
        too_little.append(
            f"{any_run.config.data.resolution} x {any_run.config.data.resolution} pixels (< {rule.min_resolution})"
        )
    if epochs < rule.min_epochs:
        too_little.append(f"{epochs} epochs (< {rule.min_epochs})")
    arm_name = "V2 (variational)" if choice == "variational" else "V1 (deterministic)"
    summary = f"Choose {arm_name}: {reason}."
    if too_little:
        summary += (
            " This is provisional: the data is too little to decide ("
            + ", ".join(too_little)
            + "); rerun on the full layout set at 512 x 512 for 10 epochs."
        )
    return {
        "choice": choice,
        "verdict": verdict,
        "primary_endpoint": primary_name,
        "chosen_experiment": chosen.name,
        "arms": {label: [r.name for r in study.arm(label)] for label in ("V1", "V2")},
        "summary": summary,
        "reason": reason,
        "data_sufficient": not too_little,
        "data_limits": too_little,
        "criteria": criteria,
        "flags": flags,
        "rule": asdict(rule),
    }


def read_probe(path: Path, runs: list[RunSummary]) -> tuple[dict | None, list[str]]:
    """The probe's metrics when they cover every compared run (the primary endpoint), else None
    and why not, for the decision's flags."""
    if not path.is_file():
        return None, []
    probe = json.loads(path.read_text())
    missing = [run.name for run in runs if run.name not in probe["experiments"]]
    if missing:
        return None, [f"the probe's metrics do not cover {', '.join(missing)}, so the probe is not the endpoint"]
    return probe, []


RECIPE_KEYS = ("precision", "memory_format", "compile", "world_size", "torch")


def recipe_flags(runs: list[RunSummary]) -> list[str]:
    """A flag for each recipe setting (precision, memory format, compile, world size, torch) on
    which the runs' provenance.json records differ, and for runs without a record."""
    recipes, flags = {}, []
    for run in runs:
        path = run.outputs.provenance(run.name)
        if not path.is_file():
            flags.append(f"{run.name}: no provenance.json, so its numerical recipe is unknown")
            continue
        sessions = json.loads(path.read_text())["sessions"]
        recipes[run.name] = {key: {str(s.get(key)) for s in sessions} for key in RECIPE_KEYS}
    for key in RECIPE_KEYS:
        values = {name: recipe[key] for name, recipe in recipes.items()}
        if len(set().union(*values.values()) if values else set()) > 1:
            shown = "; ".join(f"{name}: {', '.join(sorted(v))}" for name, v in values.items())
            flags.append(f"the runs' recipes differ in {key} ({shown})")
    return flags


def phase1_3_base_config(decision: dict, runs: list[RunSummary], phase: str = "phase1_3_loss_tuning") -> dict:
    """The next phase's base configuration: the winning architecture and ``variational`` setting,
    with the KLD loss (at the Phase 1.2 weight) only if the VAE won."""
    winner = next(r for r in runs if r.name == decision["chosen_experiment"])
    values = winner.config.to_dict()
    values["name"] = "phase1_3_base"
    values["phase"] = phase
    values["model"]["variational"] = decision["choice"] == "variational"
    if decision["choice"] != "variational":
        values["loss"]["kld"] = 0.0
    return values


def write_decision(decision: dict, runs: list[RunSummary], out: Outputs) -> tuple[Path, Path]:
    """Write ``decision.json`` and ``phase1_3_base.yaml`` (validated as a loadable config) into the phase folder."""
    decision_path, config_path = out.decision, out.next_phase_config
    base = phase1_3_base_config(decision, runs)
    cfg = config_from_dict(base, source=config_path.name)  # refuse to write a config load_config would reject
    write_text_atomic(decision_path, json.dumps(decision, indent=1, allow_nan=True))
    cfg.save(config_path)
    return decision_path, config_path
