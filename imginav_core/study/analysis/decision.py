"""The Phase 1.2 decision as a rule fixed before the data is seen: every threshold a named field of
``Rule``, recorded in the protocol (``protocol``) so that a reader can check it was not moved.

The VAE is chosen only when its primary endpoint, the diffusion probe's FLD (``primary.py``), is
better with the interval excluding no difference, non-inferiority holds on every reconstruction
margin (``criteria.py``), no compared run's generations are flagged by the guard and its posterior
has not collapsed. Otherwise the deterministic encoder, saying whether the VAE was shown worse (an
interval entirely on the wrong side) or the data cannot tell (inconclusive: the deterministic
encoder is then the default because it is the simpler model, not because it was shown better).
Without the probe's results for every compared run, or with results older than a run's final
checkpoint, the analysis stops (``ProbeError``) unless told to go on without it
(``allow_no_probe``), and then no choice is made. Everything else (SSIM, sharpness, palette purity,
latent noise, interpolation paths, the nearest-neighbour midpoints, the KL band, the primary's
robustness checks) is reported with its interval (``stats.py``) and the effect the design could
see, and does not decide. Every planned run that is not compared is named, with why.

The decision compares exactly two arms, the study file's ``decision: [baseline, candidate]`` (V1,
the deterministic encoder, and V2, the VAE); any further arm of the study is measured and drawn,
not decided on.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import config_from_dict, write_config
from ...errors import ProbeError
from ...export import export_instructions
from ...outputs import Outputs
from ..arms import decision_arms
from ..numbers import sig
from ..plan import config_differences
from ..protocol import CONFIG_NOT_RESULTS, build_protocol, registration
from ..results import Decision, ProbeMetrics
from ..runs import MissingRun, RunSummary, missing_runs
from ..stats import PerImage, arm_difference
from .criteria import PRIMARY, Measure, Rule, rule_criteria
from .endpoint import PROBE_COMMAND, read_probe
from .evaluation import Study
from .primary import detectable_text, primary_criterion

if TYPE_CHECKING:  # (loading reads the plots, which read this module)
    from .loading import AnalysisInputs

OUTSIDE_A_PLAN = "Not pre-registered: decided outside a written study plan (no protocol to check)."


def arm_data(runs: list, key: str, denominator: str | None = None) -> PerImage:
    """An arm's per-image values of a criterion from its runs' ``per_image`` (``ModelResult``'s, or a
    sweep run's): the numerator's, over the denominator's where it has one."""
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


def criterion_verdict(criterion: dict[str, Any]) -> str:
    """Better / worse / inconclusive (primary and secondary); non-inferior / inferior /
    inconclusive against its ``margin`` (non-inferiority; a relative margin on V2 / V1 - 1): from
    the criterion's ``role``, ``better`` and ``ci95``."""
    low, high = criterion["ci95"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    better, margin = criterion["better"], criterion.get("margin")
    if criterion["role"] == "non-inferiority":
        # the margin is how much worse the VAE may be: above it for "lower", below it for "higher"
        if better == "lower":
            return "non-inferior" if high <= margin else "inferior" if low > margin else "inconclusive"
        return "non-inferior" if low >= -margin else "inferior" if high < -margin else "inconclusive"
    vae_better = high < 0 if better == "lower" else low > 0
    vae_worse = low > 0 if better == "lower" else high < 0
    return "vae better" if vae_better else "vae worse" if vae_worse else "inconclusive"


def compare(
    measure: Measure,
    margin: float | None,
    a: PerImage,
    b: PerImage,
    groups: np.ndarray,
    rule: Rule,
    names: tuple[str, str],
    runs: tuple[list[str], list[str]],
) -> dict[str, Any]:
    """One criterion of ``measure``: the interval of B against A (``stats.arm_difference`` at the
    rule's level, power, resamples), each arm's per-seed values and the verdict. A relative margin
    with ``assessable_from`` is not assessed when A's mean is below it, or a run's value is not above
    zero (a ratio to it is any size): the verdict is "not assessable", the absolute difference is
    reported with a ``note`` saying why, and non-inferiority is not shown on it."""
    values_a, values_b = _arm_values(a), _arm_values(b)
    blocked = ""
    if measure.relative and measure.assessable_from is not None:
        shown = ", ".join(f"{v:.3g}" for v in values_a)
        if not np.mean(values_a) >= measure.assessable_from:
            blocked = (
                f"{names[0]}'s {measure.name.replace('_', ' ')} is {np.mean(values_a):.3g} (runs {shown}), below "
                f"{measure.assessable_from:g}: the decoders barely have it, and a ratio to it is any size"
            )
        elif min(values_a + values_b) <= 0:
            blocked = f"a run's {measure.name.replace('_', ' ')} is 0: a ratio to or of it is not defined"
    interval = arm_difference(
        a,
        b,
        groups,
        relative=measure.relative and not blocked,
        resamples=rule.resamples,
        level=rule.level,
        target_power=rule.power,
        seed=rule.seed,
        names=names,
        runs=runs,
        what=measure.name.replace("_", " "),
    )
    criterion = {
        "role": measure.role,
        "meaning": measure.meaning,
        "better": measure.better,
        "descriptive": measure.descriptive,  # reported with its interval; decides nothing
        **interval,
        "margin": margin,
        "deterministic": values_a,
        "vae": values_b,
    }
    criterion["verdict"] = "not assessable" if blocked else criterion_verdict(criterion)
    if blocked:
        criterion["assessable"] = False
        criterion["note"] = (
            f"{blocked}; its relative margin ({margin:g}) is not assessable, so non-inferiority is not shown on it"
        )
    return criterion


# ---- the other criteria --------------------------------------------------------------------------


def _criteria(study: Study, probe: ProbeMetrics | None, rule: Rule) -> dict[str, dict[str, Any]]:
    criteria: dict[str, dict[str, Any]] = {}
    baseline, candidate = decision_arms()
    runs = ([r.name for r in study.arm(baseline)], [r.name for r in study.arm(candidate)])
    if probe is not None:
        primary = primary_criterion(probe, {baseline: runs[0], candidate: runs[1]}, rule)
        criteria[PRIMARY.name] = primary | {"verdict": criterion_verdict(primary)}
    with_realism = "nn_midpoint_realism" in study.models[0].per_image
    for measure, (key, denominator), margin in rule_criteria(rule, with_realism):
        if measure.per == "pair":  # pairs are the items, each its own group
            a, b = _per_pair(study, baseline, key), _per_pair(study, candidate, key)
            item_groups = np.arange(len(study.pairs))
        else:  # layouts are the items, resampled scene by scene
            a, b = (arm_data(study.arm(label), key, denominator) for label in (baseline, candidate))
            item_groups = study.groups  # scenes joined with identical layouts: no copy counts twice
        names = (f"{baseline} (deterministic)", f"{candidate} (VAE)")
        criteria[measure.name] = compare(measure, margin, a, b, item_groups, rule, names, runs)
    return criteria


def _posterior_flags(study: Study, rule: Rule, criteria: dict) -> tuple[list[str], bool]:
    flags, collapsed = [], False
    _, candidate = decision_arms()
    for r in study.arm(candidate):
        post = r.metrics.get("posterior")
        if not post:
            continue
        kl = post["kl_weighted"]
        if kl < rule.kld_low:
            flags.append(
                f"{r.name}: weighted KL {sig(kl)} is below {rule.kld_low:g}: the posterior is near the prior "
                f"({post['kl_nats_per_element']:.3g} nats per latent element), towards collapse"
            )
        elif kl > rule.kld_high:
            flags.append(
                f"{r.name}: weighted KL {sig(kl)} is above {rule.kld_high:g}: the KL barely regularises "
                f"({post['kl_nats_per_element']:.3g} nats per latent element)"
            )
        measured_at = post.get("active_threshold", rule.active_unit_variance)
        if measured_at != rule.active_unit_variance:
            flags.append(
                f"{r.name}: its active units were counted at a posterior-mean variance above {measured_at:g}, the "
                f"rule's is {rule.active_unit_variance:g}: measure the runs again under the rule"
            )
        if post["active_share"] < rule.collapse_active_share:  # the rule's threshold, not the measurement's
            collapsed = True
            flags.append(
                f"{r.name}: posterior collapse: {post['active_units']} of {post['units']} latent units active "
                f"(below {100 * rule.collapse_active_share:g} %)"
            )
    posts = [r.metrics["posterior"] for r in study.arm(candidate) if "posterior" in r.metrics]
    if posts:  # two flags with the runs' values, no interval
        counts = {"n_seeds": [0, len(posts)], "n_images": len(study.positions), "ci95": None}
        kl_keys = ("kl_weighted", "kl_nats_per_element", "kl_bits_per_pixel", "kl_share_of_loss")
        criteria["kl"] = {
            "role": "flag",
            "meaning": "the VAE's KL: weighted (band "
            f"{rule.kld_low:g}..{rule.kld_high:g}), in nats per latent element, bits per pixel, "
            "share of the validation loss",
            **{key: [p[key] for p in posts] for key in kl_keys},
            "verdict": "flag" if any(not rule.kld_low <= p["kl_weighted"] <= rule.kld_high for p in posts) else "ok",
            **counts,
        }
        criteria["active_units"] = {
            "role": "flag",
            "meaning": "share of the VAE's latent units whose posterior mean "
            f"varies across layouts (variance above {rule.active_unit_variance:g}; Burda et al. 2016); collapse "
            f"below {100 * rule.collapse_active_share:g} %",
            "vae": [p["active_share"] for p in posts],
            "verdict": "flag" if collapsed else "ok",
            **counts,
        }
    return flags, collapsed


# ---- the decision ----------------------------------------------------------------------------------


def _verdict_and_reason(
    criteria: dict, collapsed: bool, probe: ProbeMetrics | None, guarded: list[str]
) -> tuple[str, str]:
    margins = {k: c for k, c in criteria.items() if c["role"] == "non-inferiority"}
    seeds_known = all(c.get("seed_spread_known", True) for c in criteria.values() if c["role"] != "flag")
    inferior = [k for k, c in margins.items() if c["verdict"] == "inferior"]
    if probe is None:
        return "no primary endpoint", "the primary endpoint (the diffusion probe's FLD) was not measured"
    primary = criteria[PRIMARY.name]
    if collapsed:
        return "vae worse", "the VAE's posterior collapsed"
    if guarded:  # before any reading of the primary: a flagged run of either arm supports no choice
        return "inconclusive", (
            "inconclusive: the diffusion probe cannot decide, a compared run's generations are flagged ("
            + "; ".join(guarded)
            + "); a flagged run supports no choice, so the VAE is not chosen on these runs"
        )
    if not seeds_known:
        return "inconclusive", (
            "one seed in an arm: the run-to-run spread is unknown, so no difference can be told from it; "
            "train at least 2 seeds per arm (configs/phase1_2/study.yaml plans how many)"
        )
    low, high = (1 + v for v in primary["ci95"])
    level = f"{100 * primary['level']:.0f} %"
    interval = f"V2 / V1 {sig(1 + primary['estimate'])}, {level} interval {sig(low)} to {sig(high)}"
    if primary["verdict"] == "vae better" and all(c["verdict"] == "non-inferior" for c in margins.values()):
        return "vae better", (
            f"the VAE is better on the primary endpoint ({PRIMARY.name}: {interval}, wholly below 1) "
            "and non-inferior in reconstruction"
        )
    if primary["verdict"] == "vae worse" or inferior:
        worse = (
            [f"worse on the primary endpoint ({PRIMARY.name}: {interval}, wholly above 1)"]
            if primary["verdict"] == "vae worse"
            else []
        ) + [f"inferior beyond the margin on {k}" for k in inferior]
        return "vae worse", "the VAE was shown " + " and ".join(worse)
    open_ = (
        [
            f"the primary endpoint's interval includes no difference ({PRIMARY.name}: {interval}); "
            f"{detectable_text(primary)}"
        ]
        if primary["verdict"] != "vae better"
        else []
    ) + [
        f"non-inferiority on {k} is not assessable, so not shown ({c['note']})"
        if c["verdict"] == "not assessable"
        else f"non-inferiority on {k} is not shown"
        for k, c in margins.items()
        if c["verdict"] != "non-inferior"
    ]
    return "inconclusive", "inconclusive: " + "; ".join(open_)


def _data_limits(runs: dict[str, list[RunSummary]], train_images: int, rule: Rule) -> list[str]:
    arms = decision_arms()
    any_run = runs[arms[0]][0]
    epochs = min(run.epochs_run for label in arms for run in runs[label])
    too_little = []
    if train_images < rule.min_train_images:
        too_little.append(f"{sig(train_images)} training layouts (< {sig(rule.min_train_images)})")
    resolution = any_run.config.data.resolution
    if resolution < rule.min_resolution:
        too_little.append(f"{resolution} x {resolution} pixels (< {rule.min_resolution})")
    if epochs < rule.min_epochs:
        too_little.append(f"{epochs} epoch{'s' if epochs != 1 else ''} (< {rule.min_epochs})")
    return too_little


def _plan_flags(planned: dict[str, list[str]], compared: dict[str, list[str]], missing: list[MissingRun]) -> list[str]:
    flags = [f"planned run not compared: {run.shown()}" for run in missing]
    extra = [name for label in compared for name in compared[label] if name not in planned.get(label, [])]
    if extra:
        flags.append(f"compared but not in the study plan: {', '.join(extra)}")
    return flags


def decide(
    study: Study,
    runs: dict[str, list[RunSummary]],
    train_images: int,
    probe: ProbeMetrics | None = None,
    rule: Rule = Rule(),
    warnings: list[str] | None = None,
    *,
    allow_no_probe: bool = False,
    planned: dict[str, list[str]] | None = None,
    missing: list[MissingRun] | None = None,
    registration: dict[str, Any] | None = None,
) -> Decision:
    """The decision record (``decision.json``'s content) for the two arms the decision compares
    (``decision_arms``: the deterministic baseline, V1, and the variational candidate, V2), each one
    run per seed, measured in ``study``; other arms of ``study`` and ``runs`` are not compared. A
    ValueError when either arm has no runs or a run is of the wrong kind.

    ``probe``: the probe's metrics, covering every compared run; None only with
    ``allow_no_probe`` (then ``choice`` is None, the verdict "no primary endpoint"). ``planned``:
    each arm's runs in the study plan (None: the compared runs), ``missing``: those not compared
    and why (``runs.missing_runs``), ``registration``: the protocol checked against the plan's
    (``protocol.registration``; None: decided outside a written plan). ``warnings``: flags to show
    first (e.g. unfinished runs)."""
    baseline, candidate = decision_arms()
    if not study.arm(baseline) or not study.arm(candidate):
        raise ValueError(
            f"the decision compares exactly two arms, a deterministic arm ({baseline}) and a variational arm "
            f"({candidate}); got runs {[r.name for r in study.models]}"
        )
    wrong = [r.name for r in study.arm(baseline) if r.variational]
    wrong += [r.name for r in study.arm(candidate) if not r.variational]
    if wrong:
        raise ValueError(f"runs in the wrong arm ({baseline} must be deterministic, {candidate} variational): {wrong}")
    compared = {label: [r.name for r in study.arm(label)] for label in (baseline, candidate)}
    if probe is None and not allow_no_probe:
        raise ProbeError(
            f"the decision's primary endpoint is the diffusion probe, and no probe results were given: probe the "
            f"runs ({PROBE_COMMAND}), or decide with allow_no_probe=True for the other criteria without a choice"
        )
    if probe is not None:
        uncovered = [name for label in compared for name in compared[label] if name not in probe.experiments]
        if uncovered:
            raise ProbeError(f"the probe's results do not cover {', '.join(uncovered)} ({PROBE_COMMAND})")
    planned = compared if planned is None else {label: list(planned.get(label, [])) for label in compared}
    missing = list(missing or [])

    criteria = _criteria(study, probe, rule)
    flags = list(warnings or [])
    posterior_flags, collapsed = _posterior_flags(study, rule, criteria)
    primary = criteria.get(PRIMARY.name)  # None without the probe
    guarded = [flag for found in primary["guard"].values() for flag in found["flags"]] if primary else []
    flags += posterior_flags + guarded
    flags += recipe_flags([run for label in compared for run in runs[label]])
    flags += _plan_flags(planned, compared, missing)
    robustness = primary["robustness"] if primary else None
    if robustness and robustness["ranking_holds"] is False:
        against = [f"scorer seed {k}" for k, c in robustness["scorer_seeds"].items() if not c["agrees"]] + [
            f"denoiser budget {k}" for k, c in robustness["budgets"].items() if not c["agrees"]
        ]
        flags.append(f"the primary endpoint's point estimate favours the other arm under {', '.join(against)}")

    verdict, reason = _verdict_and_reason(criteria, collapsed, probe, guarded)
    choice = None if probe is None else "variational" if verdict == "vae better" else "deterministic"
    too_little = _data_limits(runs, train_images, rule)
    if choice is None:
        summary = (
            f"No choice: {reason}. The other criteria are reported and do not decide; no Phase 1.3 base "
            "configuration is written."
        )
    else:
        arm_name = f"{candidate} (variational)" if choice == "variational" else f"{baseline} (deterministic)"
        summary = f"Choose {arm_name}: {reason}."
        if verdict == "inconclusive":
            summary += (
                f" {baseline} is the default because it is the simpler model, not because it was shown better (the "
                "specification: the deterministic encoder is typically chosen if quality is similar)."
            )
    if missing:
        summary += f" Planned runs not compared: {'; '.join(run.shown() for run in missing)}."
    if too_little:
        summary += (
            " This is provisional: the data is too little to decide ("
            + ", ".join(too_little)
            + "); rerun on the full layout set at 512 x 512 for 10 epochs."
        )
    chosen = None if choice is None else study.arm(candidate if choice == "variational" else baseline)[0].name
    return Decision(
        choice=choice,
        verdict=verdict,
        primary_endpoint=PRIMARY.name,
        chosen_experiment=chosen,
        arms=compared,
        planned_runs=planned,
        missing_runs=[asdict(run) for run in missing],
        evaluation_split=study.evaluation_split,
        summary=summary,
        reason=reason,
        data_sufficient=not too_little,
        data_limits=too_little,
        criteria=criteria,
        flags=flags,
        rule=asdict(rule),
        protocol=registration or {"status": "not pre-registered", "line": OUTSIDE_A_PLAN, "changes": []},
    )


def decide_study(study: Study, analysis: AnalysisInputs, *, rule: Rule = Rule()) -> Decision:
    """The analysis notebook's decision: the probe read (and required, unless ``allow_no_probe``),
    the plan's runs against those compared, unfinished runs flagged, the protocol checked against
    the one written with the plan (``protocol.registration``), then ``decide``. It reads files and
    changes nothing, so running it again gives the same decision."""
    plan, out, arms = analysis.plan, analysis.out, analysis.arms.arms
    compared = plan.study.decision
    runs = [run for label in compared for run in arms[label]]
    probe, probe_flags = read_probe(out.probe_metrics, runs, allow_no_probe=analysis.allow_no_probe)
    planned = {label: plan.arm_names(label) for label in compared}
    flags = [f"unfinished run compared: {run.name}: {run.problem}" for run in runs if not run.finished] + probe_flags
    trained = {run.name: run.config for label in arms for run in arms[label]}
    off_plan = [
        f"{name}: {difference}"
        for name, cfg in trained.items()
        if name in plan.configs
        for difference in config_differences(plan.configs[name], cfg, ignore=CONFIG_NOT_RESULTS)
    ]
    flags += [f"run trained off its planned config: {entry}" for entry in off_plan]
    deviations = [f"allow_unfinished: {run.name} compared unfinished" for run in runs if not run.finished]
    deviations += ["allow_no_probe: decided without the primary endpoint"] if probe is None else []
    current = None
    if plan.configs:  # a plan written with its runs' configs (by this code): its protocol can be rebuilt
        current = build_protocol(
            plan, rule=rule, configs=trained, probe=probe.settings if probe else None, analysis=study.settings
        )
    return decide(
        study,
        arms,
        train_images=len(study.data.train),
        probe=probe,
        rule=rule,
        warnings=flags,
        allow_no_probe=analysis.allow_no_probe,
        planned=planned,
        missing=missing_runs(out, planned, arms),
        registration=registration(plan, current, off_plan, deviations),
    )


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


def write_decision(
    decision: Decision, runs: list[RunSummary], out: Outputs, recommendation: str = ""
) -> tuple[Path, Path | None]:
    """Write ``decision.json`` and ``phase1_3_base.yaml`` into the phase folder: the winning run's
    architecture and ``variational`` setting, with the KLD loss (at the Phase 1.2 weight) only if
    the VAE won, validated as a loadable config. Without a choice there is no next configuration:
    none is written, one left by an earlier analysis is removed (it would carry a choice this
    decision did not make), and the second path is None. ``recommendation``: a secondary result
    (the KL-weight sweep's, ``sweep.Recommendation.comment``) written as comment lines at the top
    of phase1_3_base.yaml, never into its settings: the configuration stays the decision's choice."""
    decision_path, config_path = out.decision, out.next_phase_config
    if decision.choice is None:
        decision.write(decision_path)
        config_path.unlink(missing_ok=True)
        return decision_path, None
    base = next(r for r in runs if r.name == decision.chosen_experiment).config.to_dict()
    base["name"], base["phase"] = "phase1_3_base", "phase1_3_loss_tuning"
    base["model"]["variational"] = decision.choice == "variational"
    if decision.choice != "variational":
        base["loss"]["kld"] = 0.0
    cfg = config_from_dict(base, source=config_path.name)  # refuse to write a config load_config would reject
    decision.write(decision_path)
    lines = [*recommendation.splitlines(), *export_instructions(out, decision.chosen_experiment).splitlines()]
    write_config(cfg, config_path, header="".join(f"# {line}".rstrip() + "\n" for line in lines))
    return decision_path, config_path


def files_written(out: Outputs, decision_path: Path, config_path: Path | None) -> str:
    """What ``write_decision`` wrote, as the notebook prints it."""
    second = out.shown(config_path) if config_path else "no Phase 1.3 base configuration (no choice)"
    return f"written: {out.shown(decision_path)}\n         {second}"
