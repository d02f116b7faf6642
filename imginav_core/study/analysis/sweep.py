"""The KL weight as a curve: how diffusable the latent space is, from the deterministic encoder
(weight 0: V1's runs) to a strongly regularised VAE, and a recommendation kept apart from the
pre-registered decision (which stays V1 against V2, ``decision.py``).

For each weight of the study plan's KL sweep (``study_plan.sweep_points``: V1's runs at 0, V2's at
1e-4, the sweep's VAE runs at the others) and each of its runs:

- the diffusion probe's FLD of the layouts generated in the run's space, each run's geometric mean
  over the scorer seeds every run of the curve was scored with (the decision's primary score);
- the reconstruction MSE and the small-class IoU on the analysis's own test layouts (the study's
  positions: every run on the same layouts, so each weight is compared with V1 image by image);
- the KL in nats per latent element and the share of active units (a VAE's; the deterministic
  encoder has neither: its latents have no prior to be measured against).

V1's and V2's runs were measured by the study (``study.run_study``); the other weights' runs get a
light pass here, one encoding and decoding of the same test layouts for the reconstruction and the
posterior only, with the study's own functions. Not the study's full measurement: the curve needs
none of its latent-noise, interpolation, nearest-neighbour or example measures, which would multiply
the analysis's time by the sweep's runs (20 at 5 seeds) for figures the report does not show.

Each weight's value comes with a 95 % t interval over its runs (none with one run per weight). The
recommendation, a secondary result: of the weights whose reconstruction is non-inferior to V1's by
the decision's own criteria, margins and verdicts (``decision.compare``) and whose generations the
guard does not flag, the one with the lowest FLD, with, against each adjacent weight, the FLD
ratio's interval over the runs (``stats.run_difference``; under these scorer networks, the curve
keeps each run's mean over them): distinguishable when it excludes zero. With one run per weight
the seed-to-seed spread is unknown, so no weight is shown non-inferior and nothing is
distinguishable (the decision's rule for one seed); the point estimates' reading is given apart,
as provisional.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from ...errors import ProbeError
from ...files import write_text_atomic
from ...outputs import Outputs
from ...runtime import resolve_device
from ...training.checkpoints import load_model
from ..arms import decision_arms
from ..numbers import sig
from ..plan import StudyPlan, SweepPoint
from ..probe.guard import guard_run
from ..results import ProbeMetrics, ResultsError
from ..runs import RunSummary, load_run, shared_config
from ..stats import Estimate, PerImage, run_difference, seed_estimate
from . import measures as m
from .criteria import Rule, rule_criteria
from .decision import arm_data, compare, criterion_verdict
from .endpoint import probe_problems
from .evaluation import Study
from .primary import log_fld_table, scorer_seeds
from .study import posterior_health, reconstruction_pass

ONE_RUN = "one run per weight: the seed-to-seed spread is unknown, so no interval"


@dataclass
class SweepRun:
    """One run of the curve, as measured on the study's test layouts."""

    name: str
    kld: float
    seed: int
    variational: bool
    mse: np.ndarray  # (N,) per measured test layout
    small_inter: np.ndarray  # (N, K) small-class intersection and union pixel counts
    small_union: np.ndarray
    kl_nats_per_element: float | None = None  # None: a deterministic encoder
    active_share: float | None = None
    log_fld: float | None = None  # log of the geometric-mean FLD over the scorer seeds; None: not probed
    log_fld_se: float = 0.0  # its own sampling error (the probe's interval), used with one run only
    guard: list[str] = field(default_factory=list)  # the guard's flags of its generations (primary.guard_run)

    @property
    def per_image(self) -> dict[str, np.ndarray]:
        """Its per-image values by ``ModelResult.per_image`` key, as the decision's criteria read them."""
        return {"mse": self.mse, "small_inter": self.small_inter, "small_union": self.small_union}

    @property
    def mse_value(self) -> float:
        return float(self.mse.mean())

    @property
    def small_class_iou(self) -> float:
        return float(
            PerImage(self.small_inter[None], self.small_union[None]).per_seed(np.ones((1, len(self.mse))))[0, 0]
        )


def weight_text(weight: float) -> str:
    """``0``, ``1e-5``, ``3e-4``, ``0.15``: a KL weight as the report writes it."""
    if weight == 0:
        return "0"
    mantissa, exponent = f"{weight:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}" if float(f"{weight:.0e}") == weight else f"{weight:g}"


@dataclass
class CurvePoint:
    kld: float
    arm: str  # whose runs: V1 at 0, V2 at its own weight and the sweep's weights
    comparison: bool  # an arm's comparison runs
    runs: list[SweepRun] = field(repr=False)
    fld: Estimate
    mse: Estimate
    small_class_iou: Estimate
    kl_nats_per_element: Estimate
    active_share: Estimate
    # against V1, per decision criterion: stats.arm_difference's interval and the verdict; {} for V1 itself
    non_inferiority: dict[str, dict[str, Any]]

    @property
    def label(self) -> str:
        """``0 (V1)``, ``1e-4 (V2)``, ``1e-3``: the weight, and the arm whose comparison runs these are."""
        return f"{weight_text(self.kld)} ({self.arm})" if self.comparison else weight_text(self.kld)

    def to_json(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "runs"}  # not the per-image arrays
        values = {k: asdict(v) if isinstance(v, Estimate) else v for k, v in values.items()}
        return values | {
            "label": self.label,
            "names": [r.name for r in self.runs],
            "seeds": [r.seed for r in self.runs],
        }


def _non_inferiority(reference: list[SweepRun], runs: list[SweepRun], groups: np.ndarray, rule: Rule) -> dict:
    """Each reconstruction criterion of the decision (its measure, margin and interval), ``runs``
    against ``reference`` (V1): ``decision.compare`` on the same test layouts, resampled by group,
    with the decision's verdict; with one run in either, "inconclusive" (the spread between seeds
    is unknown)."""
    found = {}
    for measure, (key, denominator), margin in rule_criteria(rule, with_realism=False)[:2]:
        names = (decision_arms()[0], f"KL weight {weight_text(runs[0].kld)}")
        criterion = compare(
            measure,
            margin,
            arm_data(reference, key, denominator),
            arm_data(runs, key, denominator),
            groups,
            rule,
            names,
            ([r.name for r in reference], [r.name for r in runs]),
        )
        if not criterion["seed_spread_known"] and criterion["verdict"] != "not assessable":
            criterion["verdict"], criterion["note"] = "inconclusive", ONE_RUN
        found[measure.name] = criterion
    return found


def kl_curve(
    points: list[tuple[SweepPoint, list[SweepRun]]],
    reference: list[SweepRun],
    groups: np.ndarray,
    rule: Rule = Rule(),
) -> list[CurvePoint]:
    """One point per KL weight with runs, in increasing weight: each value's estimate over its runs
    and, against ``reference`` (V1's runs), the decision's reconstruction criteria."""
    curve = []
    for point, runs in sorted(points, key=lambda p: p[0].kld):
        if not runs:
            continue
        probed = [r.log_fld for r in runs if r.log_fld is not None]
        is_reference = {r.name for r in runs} == {r.name for r in reference}
        posterior = [r for r in runs if r.kl_nats_per_element is not None]
        curve.append(
            CurvePoint(
                point.kld,
                point.arm,
                point.comparison,
                runs,
                # only a weight whose every run was probed has an FLD: a partial mean would be another measure
                seed_estimate([math.exp(v) for v in probed], log=True)
                if len(probed) == len(runs)
                else Estimate(None, None, []),
                seed_estimate([r.mse_value for r in runs]),
                seed_estimate([r.small_class_iou for r in runs]),
                seed_estimate([r.kl_nats_per_element for r in posterior]),
                seed_estimate([r.active_share for r in posterior]),
                {} if is_reference else _non_inferiority(reference, runs, groups, rule),
            )
        )
    return curve


# ---- the recommendation: a secondary result -----------------------------------------------------------


@dataclass
class Neighbour:
    """An adjacent weight against the recommended one."""

    kld: float
    label: str
    # stats.run_difference of the runs' log FLD: this weight's FLD / the recommended one's - 1; None: not probed
    ratio: dict[str, Any] | None
    distinguishable: bool | None  # the ratio's interval excludes zero; None: cannot tell (one run, not probed)


@dataclass
class Recommendation:
    kld: float | None  # None: no weight qualifies (nothing probed)
    label: str
    fld: Estimate | None
    neighbours: list[Neighbour]
    candidates: list[str]  # the weights whose reconstruction is non-inferior to V1 (V1 itself included)
    excluded: dict[str, str]  # weight -> why it is not a candidate
    provisional: str  # the point estimates' reading where the intervals cannot tell; "" otherwise
    text: str

    @property
    def comment(self) -> str:
        """The recommendation as phase1_3_base.yaml's comment: said to be no part of its choice."""
        return (
            _wrapped(
                "KL-weight sweep, a secondary result: NOT this configuration's choice, which is the pre-registered "
                "V1-against-V2 decision's (decision.json)."
            )
            + "\n"
            + _wrapped(self.text)
        )


def _wrapped(text: str, width: int = 96) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False))


def _shown(estimate: Estimate) -> str:
    if estimate.estimate is None:
        return "not measured"
    interval = f"95 % CI {sig(estimate.ci95[0])}-{sig(estimate.ci95[1])}" if estimate.ci95 else "no interval"
    runs = len(estimate.runs)
    return f"{sig(estimate.estimate)} ({interval}, {runs} run{'s' if runs != 1 else ''})"


def _neighbour(best: CurvePoint, other: CurvePoint, rule: Rule) -> Neighbour:
    if other.fld.estimate is None:
        return Neighbour(other.kld, other.label, None, None)

    def scores(point: CurvePoint) -> tuple[np.ndarray, np.ndarray]:
        return np.array([r.log_fld for r in point.runs]), np.array([r.log_fld_se for r in point.runs])

    ratio = run_difference(*scores(best), *scores(other), log=True)
    low, high = ratio["ci95"]
    distinguishable = (low > 0 or high < 0) if ratio["seed_spread_known"] else None
    return Neighbour(other.kld, other.label, ratio, distinguishable)


def _within_margins_by_point_estimate(point: CurvePoint) -> bool:
    """The reconstruction's point estimates within the decision's margins: its verdict on an
    interval of no width."""
    return all(
        c["verdict"] != "not assessable" and criterion_verdict(c | {"ci95": [c["estimate"]] * 2}) == "non-inferior"
        for c in point.non_inferiority.values()
    )


def recommend(curve: list[CurvePoint], rule: Rule = Rule()) -> Recommendation:
    """The weight with the lowest FLD among those whose reconstruction is non-inferior to V1's (the
    reference, a candidate by definition), with its interval and its adjacent weights' FLD ratio."""
    candidates: list[CurvePoint] = []
    excluded: dict[str, str] = {}
    for point in curve:
        if point.fld.estimate is None:
            excluded[point.label] = "not probed (the FLD of every run of the weight is needed)"
            continue
        flagged = [flag for run in point.runs for flag in run.guard]
        open_ = {name: c for name, c in point.non_inferiority.items() if c["verdict"] != "non-inferior"}
        if flagged:
            excluded[point.label] = f"generations flagged by the guard ({'; '.join(flagged)})"
        elif any(c.get("note") == ONE_RUN for c in open_.values()):
            excluded[point.label] = (
                "reconstruction not shown non-inferior to V1's (one run: the spread between seeds unknown)"
            )
        elif open_:
            shown = ", ".join(f"{name} {c['verdict']}" for name, c in open_.items())
            excluded[point.label] = f"reconstruction not shown non-inferior to V1's ({shown})"
        else:
            candidates.append(point)
    margins = (
        f"MSE at most {100 * rule.mse_margin:.0f} % higher, small-class IoU at most "
        f"{100 * rule.small_class_iou_margin:.0f} % lower (assessed where V1's is at least "
        f"{rule.small_class_iou_min:g}), "
        f"by the decision's {100 * rule.level:.0f} % intervals"
    )
    if not candidates:
        text = (
            "No KL weight can be recommended: no weight of the sweep has the probe's FLD for every run "
            f"({'; '.join(f'{k}: {why}' for k, why in excluded.items())})."
        )
        return Recommendation(None, "", None, [], [], excluded, "", text)
    best = min(candidates, key=lambda p: p.fld.estimate)
    at = curve.index(best)
    neighbours = [_neighbour(best, curve[j], rule) for j in (at - 1, at + 1) if 0 <= j < len(curve)]
    provisional = ""
    if any(len(p.runs) < 2 for p in curve):
        within = [p for p in curve if p.fld.estimate is not None and _within_margins_by_point_estimate(p)]
        guess = min(within, key=lambda p: p.fld.estimate) if within else None
        if guess is not None:
            provisional = (
                f"By point estimates alone ({ONE_RUN}), the lowest FLD among the weights whose reconstruction "
                f"is within the margins is at KL weight {guess.label}, {sig(guess.fld.estimate)}: provisional, "
                "not a result; train more seeds per weight."
            )

    def against(n: Neighbour) -> str:
        if n.ratio is None:
            return f"{n.label}: not probed"
        if n.distinguishable is None:
            return f"{n.label}: FLD {100 * n.ratio['estimate']:+.0f} %, cannot tell (one run per weight)"
        low, high = n.ratio["ci95"]
        tell = "distinguishable" if n.distinguishable else "not distinguishable"
        interval = f"95 % CI {100 * low:+.0f} to {100 * high:+.0f} %"
        return f"{n.label}: FLD {100 * n.ratio['estimate']:+.0f} % ({interval}), {tell}"

    if len(candidates) == 1 and not best.non_inferiority:  # V1, the reference, alone
        text = (
            f"No KL weight of the VAE was shown non-inferior to V1's reconstruction ({margins}), so the "
            f"recommendation is V1's deterministic encoder, KL weight 0: FLD {_shown(best.fld)}."
        )
    else:
        text = (
            f"Of the KL weights whose reconstruction is non-inferior to V1's ({margins}), {best.label} has the "
            f"lowest diffusion-probe FLD, {_shown(best.fld)}."
        )
    if neighbours:
        text += " Against the adjacent weights: " + "; ".join(against(n) for n in neighbours) + "."
    if excluded:
        by_reason: dict[str, list[str]] = {}
        for weight, why in excluded.items():
            by_reason.setdefault(why, []).append(weight)
        text += " Not candidates: " + "; ".join(f"{', '.join(w)}: {why}" for why, w in by_reason.items()) + "."
    if provisional:
        text += " " + provisional
    text += " The pre-registered decision (V1 against V2) does not change with it."
    return Recommendation(
        best.kld, best.label, best.fld, neighbours, [p.label for p in candidates], excluded, provisional, text
    )


# ---- measuring the sweep's runs ------------------------------------------------------------------------


def _mse_only(rgb: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"mse": m.mse_per_image(rgb, target)}


@torch.no_grad()
def measure_run(run: RunSummary, study: Study, device: torch.device) -> SweepRun:
    """The light pass: the study's reconstruction pass over its test layouts
    (``study.reconstruction_pass``) for the MSE, the small-class counts and the posterior; none of
    the study's other measures (its SSIM alone takes half a second a layout at 512 x 512 on a CPU)."""
    cfg, model, _ = load_model(run.best_checkpoint, device)
    per_image, _, means, logvars, _ = reconstruction_pass(model, study, device, measures=_mse_only)
    found = SweepRun(
        run.name,
        cfg.loss.kld,
        cfg.training.seed,
        cfg.model.variational,
        per_image["mse"],
        per_image["small_inter"],
        per_image["small_union"],
    )
    if cfg.model.variational:
        health = posterior_health(run, cfg, means, logvars)
        found.kl_nats_per_element, found.active_share = health["kl_nats_per_element"], health["active_share"]
    return found


def measured_run(result, kld: float) -> SweepRun:
    """A run the study measured already (``study.ModelResult``), as the curve takes it."""
    posterior = result.metrics.get("posterior") or {}
    return SweepRun(
        result.name,
        kld,
        result.seed,
        result.variational,
        result.per_image["mse"],
        result.per_image["small_inter"],
        result.per_image["small_union"],
        posterior.get("kl_nats_per_element"),
        posterior.get("active_share"),
    )


@dataclass
class KLSweep:
    """The KL-weight curve (``OUTPUT_ROOT/<phase>/analysis/kl_sweep.json``) and its recommendation."""

    curve: list[CurvePoint]
    recommendation: Recommendation
    missing: list[str]  # planned runs of the sweep not on the curve, and why
    fld_score: str  # which FLD: the scorer seeds of its geometric mean
    evaluation_images: int

    def to_json(self) -> dict[str, Any]:
        return {
            "role": "secondary: a description of the KL weight, apart from the pre-registered decision",
            "fld_score": self.fld_score,
            "evaluation_images": self.evaluation_images,
            "curve": [point.to_json() for point in self.curve],
            "recommendation": asdict(self.recommendation),
            "missing_runs": self.missing,
        }


def _probe_scores(
    out: Outputs, runs: dict[str, SweepRun], summaries: list[RunSummary], rule: Rule
) -> tuple[str, list[str]]:
    """Put each run's log FLD (the geometric mean over the scorer seeds all of them were scored
    with) and the guard's flags of its generations into ``runs``; (which score, why a run has
    none). A sweep run's probe result must be newer than its checkpoint (``endpoint.probe_problems``);
    the comparison runs' the decision checked."""
    if not out.probe_metrics.is_file():
        return "FLD", [f"the diffusion probe has not written {out.shown(out.probe_metrics)}"]
    try:
        probe = ProbeMetrics.read(out.probe_metrics)
    except ResultsError as err:
        shown = out.shown(out.probe_metrics)
        return "FLD", [f"not the probe's metrics: {str(err).replace(str(out.probe_metrics), shown)}"]
    problems, stale = [], set()
    for summary in summaries:
        _, problem = probe_problems(out.probe_metrics, [summary])
        if problem and summary.name in probe.experiments:  # probed before it last trained
            problems.append(f"{summary.name}: no FLD: {problem}")
            stale.add(summary.name)
    probed = [name for name in runs if name in probe.experiments and name not in stale]
    problems += [f"{name}: not probed" for name in runs if name not in probe.experiments]
    scorers = scorer_seeds(probe, probed)
    for name in probed:
        try:
            table, (error,) = log_fld_table(probe, [name], scorers)
        except ProbeError as err:  # a diverged denoiser: that run has no FLD, the curve says so
            problems.append(str(err))
            continue
        runs[name].log_fld, runs[name].log_fld_se = float(table.mean(1)[0]), float(error)
        runs[name].guard = guard_run(name, probe.guard(name), rule)["flags"]
    return (f"geometric mean FLD over scorer seeds {', '.join(scorers)}" if scorers else "FLD"), problems


def measure_sweep(
    study: Study, out: Outputs, plan: StudyPlan, rule: Rule = Rule(), log=print, *, write: bool = True
) -> KLSweep | None:
    """The KL-weight curve of ``plan``'s sweep (None when the plan has none): the runs the study
    measured taken from it, the others measured by ``measure_run`` on the same test layouts (each
    must have finished, on the same data); their FLD from the probe's metrics. Planned runs not
    found or unfinished are left out and named. With ``write``, writes ``kl_sweep.json``."""
    points = plan.sweep_points()
    if not points:
        return None
    measured = {result.name: result for result in study.models}
    reference = study.arm(decision_arms()[0])  # the decision's baseline, the deterministic encoder
    device = resolve_device(study.settings.device, "analysis device")
    missing, pending = [], []
    for point in points:
        for name in point.names:
            if name in measured:
                continue
            if not out.metrics_csv(name).is_file():
                missing.append(f"{name} (not found: no {out.shown(out.metrics_csv(name))})")
                continue
            run = load_run(out, name)
            if not run.finished:
                missing.append(f"{name} (unfinished: {run.problem})")
                continue
            pending.append(run)
    if pending:  # refuses runs trained on other data than the study's: not the same test layouts
        shared_config([*pending, load_run(out, reference[0].name)], out.root)
    runs = {
        name: measured_run(measured[name], point.kld) for point in points for name in point.names if name in measured
    }
    for run in pending:
        weight = weight_text(run.config.loss.kld)
        log(f"measuring {run.name} (KL weight {weight}) on the study's {len(study.positions)} test layouts")
        runs[run.name] = measure_run(run, study, device)
    fld_score, problems = _probe_scores(out, runs, pending, rule)
    missing += problems
    curve = kl_curve(
        [(point, [runs[name] for name in point.names if name in runs]) for point in points],
        [runs.get(r.name) or measured_run(r, 0.0) for r in reference],  # V1: the deterministic encoder, weight 0
        study.groups,
        rule,
    )
    sweep = KLSweep(curve, recommend(curve, rule), missing, fld_score, len(study.positions))
    if write:
        write_text_atomic(out.kl_sweep, json.dumps(sweep.to_json(), indent=1, allow_nan=True))
    return sweep
