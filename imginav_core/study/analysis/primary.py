"""The primary endpoint from the diffusion probe's metrics: each run's FLD under every scorer
network, the interval of V2 / V1 over runs and networks, its robustness to the instrument's own
choices, and the guard that says when a run's generations cannot inform it. Torch-free.

The guard reads what the probe recorded of each run (``ProbeMetrics.guard``: its generations and
its test-split reconstructions, at equal numbers of layouts, scored by every scorer seed) under the
rule's thresholds (``Rule.guard_fld_ratio``, ``Rule.guard_coverage_share``; ``probe.guard.guard_run``,
which the probe's own table uses too): the probe measures, the rule judges, so a threshold moved
after the data would show in the protocol.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import ProbeError
from ..arms import decision_arms
from ..numbers import sig
from ..probe.guard import guard_run
from ..results import ProbeMetrics
from ..stats import primary_difference
from .criteria import PRIMARY, Rule


def scorer_seeds(probe: ProbeMetrics, names: list[str]) -> list[str] | None:
    """The scorer seeds every run was scored with (``generated.fld_by_scorer``), or None when a
    run lacks them: each run's score must be the same measure."""
    tables = [probe.generated(name).get("fld_by_scorer") for name in names]
    if not tables or any(not table for table in tables):
        return None
    common = set(tables[0]).intersection(*tables[1:])
    return sorted(common, key=lambda seed: (len(seed), seed)) or None


def log_fld_table(probe: ProbeMetrics, names: list[str], scorers: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """(each run's log FLD under each of ``scorers``, (runs, K); or its one FLD where the probe
    recorded no seeds, (runs, 1)), and each run's sampling standard error of its mean log FLD (from
    the first score's 95 % interval, by the delta method; used only for an arm of one run). On the
    log scale each network counts alike: networks of different seeds measure on scales that differ
    several-fold, and a network's own scale cancels in the arm ratio. A run without a finite,
    positive FLD has no score: a ProbeError names it."""
    values, errors = [], []
    for name in names:
        generated = probe.generated(name)
        score = generated["scores"]["fld"]
        fld = [generated["fld_by_scorer"][seed] for seed in scorers] if scorers else [score["value"]]
        if any(v is None or not math.isfinite(v) or v <= 0 for v in fld):
            raise ProbeError(
                f"{name}: the probe's FLD is not a positive number ({fld}); the primary endpoint cannot be "
                "computed: look at the probe's log for that run (a diverged denoiser, non-finite samples)"
            )
        values.append(np.log(fld))
        low, high = score.get("ci95") or (None, None)
        usable = low is not None and high is not None and score.get("value")
        errors.append((high - low) / (2 * 1.96) / score["value"] if usable else 0.0)
    return np.array(values), np.array(errors)


# ---- robustness and the criterion -------------------------------------------------------------------------


def _robustness(probe: ProbeMetrics, arms: dict[str, list[str]], scorers: list[str] | None, estimate: float) -> dict:
    """The log ratio V2 / V1 of the geometric-mean FLD over each arm's runs under each scorer seed
    alone and under each denoiser budget (a budget's FLD the geometric mean over ``scorers`` where
    it recorded them), and whether it favours the same arm as the primary estimate (``estimate``,
    its log ratio)."""
    baseline, candidate = decision_arms()

    def log_ratio(score) -> float:
        return float(
            np.mean([np.log(score(n)) for n in arms[candidate]]) - np.mean([np.log(score(n)) for n in arms[baseline]])
        )

    def check(value: float) -> dict:
        return {"log_ratio": value, "ratio": math.exp(value), "agrees": bool(value * estimate > 0)}

    def budget_fld(budget: dict) -> float:
        by_scorer = budget.get("fld_by_scorer") or {}
        if scorers and all(seed in by_scorer for seed in scorers):
            return math.exp(float(np.mean([np.log(by_scorer[seed]) for seed in scorers])))
        return float(budget["fld"])

    names = arms[baseline] + arms[candidate]
    by_scorer = {
        seed: check(log_ratio(lambda n, s=seed: probe.generated(n)["fld_by_scorer"][s])) for seed in scorers or []
    }
    budgets = [set(probe.budgets(n)) for n in names]
    common = sorted(set.intersection(*budgets), key=lambda b: (len(b), b)) if budgets else []
    partial = sorted(set.union(*budgets) - set(common)) if budgets else []
    by_budget = {
        steps: check(log_ratio(lambda n, b=steps: budget_fld(probe.budgets(n)[b]))) for steps in common
    }  # fmt: skip
    checks = [*by_scorer.values(), *by_budget.values()]
    notes = []
    if not by_scorer:
        notes.append("the probe recorded no FLD per scorer seed for every run")
    if not by_budget:
        notes.append("the probe trained no second denoiser budget for every run")
    if partial:
        notes.append(f"budgets {', '.join(partial)} left out: not probed for every run")
    return {
        "scorer_seeds": by_scorer,
        "budgets": by_budget,
        "ranking_holds": all(c["agrees"] for c in checks) if checks else None,
        "note": "; ".join(notes),
    }


def primary_criterion(probe: ProbeMetrics, arms: dict[str, list[str]], rule: Rule) -> dict[str, Any]:
    """The primary endpoint's criterion (without its verdict, which the decision gives): the
    interval of V2 / V1 - 1 (``stats.primary_difference``, at ``rule``'s level, power and
    estimand), each arm's runs' geometric-mean FLD, the robustness and the guard of every run."""
    baseline, candidate = decision_arms()
    names = arms[baseline] + arms[candidate]
    scorers = scorer_seeds(probe, names)
    a, a_se = log_fld_table(probe, arms[baseline], scorers)
    b, b_se = log_fld_table(probe, arms[candidate], scorers)
    interval = primary_difference(
        a,
        b,
        a_se,
        b_se,
        level=rule.primary_level,
        target_power=rule.power,
        scorer_variance=rule.primary_scorer_variance,
    )
    settings = probe.settings
    generated = int(settings.get("samples", 0)) * int(settings.get("seeds", 1))
    networks = len(scorers) if scorers else 1
    return {
        "role": PRIMARY.role,
        "meaning": PRIMARY.meaning,
        "better": PRIMARY.better,
        "estimand": "V2 / V1 of the geometric-mean FLD over training seeds and scorer networks"
        + (" (networks as a sample: their arm-by-scorer variance is in the interval)" if networks > 1 else "")
        + ("" if rule.primary_scorer_variance else " under these networks only"),
        **interval,
        "n_images": None,
        "n_meaning": f"runs per arm (n_runs): each run's FLD, over its {generated} generated layouts and "
        f"{networks} scorer network(s), is one observation; the runs' spread holds the FLD's own sampling error",
        "generated_per_run": generated,
        "score": f"geometric mean FLD over scorer seeds {', '.join(scorers)}" if scorers else "FLD",
        "relative": True,  # the difference is V2 / V1 - 1 of the (geometric mean) FLD
        "deterministic": np.exp(a.mean(1)).tolist(),
        "vae": np.exp(b.mean(1)).tolist(),
        "robustness": _robustness(probe, arms, scorers, math.log1p(interval["estimate"])),
        "guard": {name: guard_run(name, probe.guard(name), rule) for name in names},
    }


def detectable_text(primary: dict[str, Any]) -> str:
    """The primary's detectable effect in words, both ways (``stats.primary_difference``)."""
    found = primary.get("detectable")
    if not found:
        return "the effect it could see is unknown (one run in an arm: no spread between runs to measure it by)"
    spread = primary.get("pooled_log_spread")
    tau = primary.get("arm_scorer_spread")
    at = f" (at the runs' observed spread, {sig(spread)} on the log scale" if spread is not None else " ("
    at += f", and the scorer networks', {sig(tau)})" if tau is not None else ")"
    return (
        f"V2's FLD would have to be at most {sig(found['at_most'])} x or at least {sig(found['at_least'])} x V1's "
        f"to be seen {100 * found['power']:.0f} % of the time{at}"
    )
