"""Confidence intervals for the difference between two arms of seeded runs: on the same images
(``arm_difference``), of a score of each run as a whole (``run_difference``), and of the probe's
FLD of each run under several scorer networks (``primary_difference``): t intervals whose degrees
of freedom follow each estimated variance part (Welch-Satterthwaite). Each states the effect it would see with
the rule's power (``power.detectable_effect``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as distributions

from .power import detectable, detectable_effect, half_widths

# ---- comparing two arms of seeded runs on the same images -----------------------------------------


def cluster_weights(groups: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, N) counts of a two-stage resample of N items: groups (scenes) drawn with
    replacement, then, within each drawn group, its items drawn with replacement. Rooms of one
    scene are not independent layouts, so the scene is the unit that is resampled first."""
    groups = np.asarray(groups)
    order = np.argsort(groups, kind="stable")
    _, starts, sizes = np.unique(groups[order], return_index=True, return_counts=True)
    drawn = rng.integers(0, len(sizes), (resamples, len(sizes)))  # the groups of each resample
    lengths = sizes[drawn].ravel()
    # within each drawn group, as many of its items drawn with replacement as it has
    first = np.repeat(starts[drawn].ravel(), lengths)
    offsets = np.floor(rng.random(lengths.sum()) * np.repeat(lengths, lengths)).astype(np.int64)
    rows = np.repeat(np.arange(resamples), sizes[drawn].sum(1))
    counts = np.bincount(rows * len(order) + order[first + offsets], minlength=resamples * len(order))
    return counts.reshape(resamples, len(order)).astype(np.float64)


@dataclass(frozen=True)
class PerImage:
    """One arm's per-image measurements: ``numerator[s, i, k]`` over ``denominator[s, i, k]``
    for seed s, image i and part k. The arm's value is the mean over seeds of, per seed,
    ``mean_k(sum_i num / sum_i den)``: a mean when the denominator is 1 (one part), an IoU of
    small classes when the parts are classes and the counts are intersections and unions."""

    numerator: np.ndarray  # (S, N, K)
    denominator: np.ndarray  # (S, N, K)

    @classmethod
    def mean_of(cls, values: np.ndarray) -> PerImage:
        values = np.asarray(values, dtype=np.float64)[..., None]  # (S, N, 1)
        return cls(values, np.ones_like(values))

    @property
    def seeds(self) -> int:
        return self.numerator.shape[0]

    def per_seed(self, weights: np.ndarray) -> np.ndarray:
        """(B, S): each seed's value under each row of image weights (B, N)."""
        num = np.einsum("bn,snk->bsk", weights, self.numerator)
        den = np.einsum("bn,snk->bsk", weights, self.denominator)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan), axis=2)


def _interval(
    estimate: float,
    parts: list[tuple[float, float]],
    seeds: tuple[int, int],
    level: float,
    target_power: float,
    *,
    log: bool = False,
    fallback_df: float = math.inf,
) -> dict:
    """``estimate +- half`` for the variance ``parts`` (each ``(variance, df)``; ``half_widths``),
    with the effect that the same design, at these variances, sees with ``target_power``
    (``detectable``). ``log``: the estimate and the interval are of a log ratio and come back as
    ratios minus 1 (``se`` stays on the log scale)."""
    variances = np.array([[float(v)] for v, _ in parts])
    dfs = np.array([float(df) for _, df in parts])
    variance = float(variances.sum())
    se = math.sqrt(variance) if variance >= 0 else math.nan
    df, half = (float(x[0]) for x in half_widths(variances, dfs, level, fallback_df))
    low, high = estimate - half, estimate + half
    if log:
        estimate, low, high = (math.expm1(v) for v in (estimate, low, high))
    found = None
    if math.isfinite(se):
        effect = detectable_effect(parts, power=target_power, level=level, fallback_df=fallback_df)
        found = detectable(effect, target_power, log)
    return {
        "estimate": float(estimate),
        "ci95": [float(low), float(high)],
        "level": level,
        "se": se,
        "df": df if math.isfinite(df) else None,
        "detectable": found,
        "n_seeds": list(seeds),
        "seed_spread_known": min(seeds) > 1,
    }


# ---- two arms measured on the same images ----------------------------------------------------------


def arm_intervals(
    seeds_a: np.ndarray,
    seeds_b: np.ndarray,
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    *,
    log: bool,
    scenes: int,
    level: float = 0.95,
) -> dict[str, np.ndarray]:
    """``arm_difference``'s interval for T studies at once (the simulations): ``seeds_a`` (T, S_a)
    each run's value over all items, ``rows_a`` (T, B, S_a) under each item resample (the same
    resamples for both arms). Returns arrays (T,): ``estimate``, ``low``, ``high``, ``df``, the
    variance parts ``seed_a``, ``seed_b`` (each arm's seeds' spread) and ``items``, and ``wobble``
    (what was taken out of the items' part), on the log scale with ``log`` (the delta method).

    Item noise counted once. A run's value over the items holds its own item noise (the run-by-item
    wobble), so the seeds' spread does; the resamples' variance of the arm difference holds it
    again, beside the items' own part (the arm-by-item interaction: which layouts one arm does
    better). The wobble's share is estimated from the same resamples, from how an arm's runs move
    apart under them (for independent wobble ``sum_s var(x_s - mean) / (S (S - 1))`` is the
    variance of the arm mean's wobble) and taken out of the resamples' variance: what is left (at
    least 0) is the items' part. (Taking it out of the seeds' spread instead, and counting it as
    known, over-covered: the seeds' part, truncated at 0 on 1 to 4 df, is biased upwards.) An arm
    of one run has no seed part: its wobble stays in the items' part. Counted twice, the intervals
    covered about 100 % and non-inferiority at equal truth was shown in a fifth of the studies."""
    mean_a, mean_b = seeds_a.mean(-1), seeds_b.mean(-1)
    arm_a, arm_b = rows_a.mean(-1), rows_b.mean(-1)  # (T, B)
    with np.errstate(invalid="ignore", divide="ignore"):
        difference = np.log(arm_b) - np.log(arm_a) if log else arm_b - arm_a
    difference = np.where(np.isfinite(difference), difference, np.nan)
    resampled = np.nan_to_num(np.nanvar(difference, axis=-1, ddof=1))

    def seed_part(values: np.ndarray, mean: np.ndarray) -> np.ndarray:
        if values.shape[-1] == 1:
            return np.zeros(values.shape[:-1])
        part = values.var(-1, ddof=1) / values.shape[-1]
        return part / mean**2 if log else part

    def wobble(rows: np.ndarray, arm: np.ndarray, mean: np.ndarray) -> np.ndarray:
        seeds = rows.shape[-1]
        if seeds == 1:
            return np.zeros(rows.shape[:-2])  # no seed part: the item resamples hold it once
        moved = np.nan_to_num(np.nanvar(rows - arm[..., None], axis=-2, ddof=1).sum(-1)) / (seeds * (seeds - 1))
        return moved / mean**2 if log else moved

    wobble_a, wobble_b = wobble(rows_a, arm_a, mean_a), wobble(rows_b, arm_b, mean_b)
    items = np.maximum(resampled - wobble_a - wobble_b, 0.0)
    seed_a, seed_b = seed_part(seeds_a, mean_a), seed_part(seeds_b, mean_b)
    dfs = np.array([seeds_a.shape[-1] - 1 or math.inf, seeds_b.shape[-1] - 1 or math.inf, math.inf])
    df, half = half_widths(np.stack([seed_a, seed_b, items]), dfs, level, max(scenes - 1, 1))
    estimate = np.log(mean_b) - np.log(mean_a) if log else mean_b - mean_a
    return {
        "estimate": estimate,
        "low": estimate - half,
        "high": estimate + half,
        "df": df,
        "seed_a": seed_a,
        "seed_b": seed_b,
        "wobble": wobble_a + wobble_b,
        "items": items,
    }


def _positive(values: np.ndarray, runs: list[str] | None, arm: str, what: str) -> None:
    """A ratio needs every run's value above zero: a ValueError naming the run otherwise."""
    for i, value in enumerate(values):
        if not value > 0:
            run = runs[i] if runs else f"{arm}'s run {i + 1}"
            raise ValueError(
                f"{run}: {what} is {value:.3g}; a ratio between the arms needs every run's value above zero "
                "(a non-positive value here means a measurement went wrong: look at that run's per-image values)"
            )


def arm_difference(
    a: PerImage,
    b: PerImage,
    groups: np.ndarray,
    *,
    relative: bool = False,
    resamples: int = 2000,
    level: float = 0.95,
    target_power: float = 0.8,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
    runs: tuple[list[str], list[str]] | None = None,
    what: str = "the value",
) -> dict:
    """B minus A on the same N items, ``estimate +- t se``; ``relative``: B / A - 1, the interval
    of log(B / A) transformed back (a ratio's sampling distribution is skewed, its log's is not).
    ``se^2``: each arm's seeds' part (the variance of its mean over its seeds) and the items' part,
    the variance of the arm difference under a bootstrap over ``groups`` (scenes), then items within
    them (the same draws for both arms: paired), less the runs' own item noise (``arm_intervals``),
    combined as ``power.half_widths`` says. With one seed in an arm its seeds' part is missing
    (``seed_spread_known`` False).

    A ratio needs every run's value above zero: a ValueError names the run (``runs``, ``what``); a
    ratio to a value near zero is not put on another scale, the caller decides whether the
    criterion can be assessed at all.

    Returns ``estimate``, ``ci95``, ``level``, ``se``, ``df``, ``detectable`` (the true difference
    this design sees with ``target_power`` at these variances, both ways), ``variance_parts``,
    ``n_seeds`` ([A, B]), ``seed_spread_known``, ``n_images`` and ``relative``."""
    n = a.numerator.shape[1]
    if b.numerator.shape[1] != n or len(groups) != n:
        raise ValueError(
            f"the arms must be measured on the same images: {n}, {b.numerator.shape[1]} and {len(groups)} groups"
        )
    weights = cluster_weights(groups, resamples, np.random.default_rng(seed))
    ones = np.ones((1, n))
    seeds_a, seeds_b = a.per_seed(ones)[0], b.per_seed(ones)[0]  # each run's value over all items
    if relative:
        _positive(seeds_a, runs[0] if runs else None, names[0], what)
        _positive(seeds_b, runs[1] if runs else None, names[1], what)
    scenes = len(np.unique(groups))
    found = arm_intervals(
        seeds_a[None], seeds_b[None], a.per_seed(weights)[None], b.per_seed(weights)[None], log=relative,
        scenes=scenes, level=level,
    )  # fmt: skip
    parts = [
        (float(found["seed_a"][0]), a.seeds - 1 if a.seeds > 1 else math.inf),
        (float(found["seed_b"][0]), b.seeds - 1 if b.seeds > 1 else math.inf),
        (float(found["items"][0]), math.inf),
    ]
    result = _interval(
        float(found["estimate"][0]), parts, (a.seeds, b.seeds), level, target_power, log=relative,
        fallback_df=max(scenes - 1, 1),
    )  # fmt: skip
    return result | {
        "variance_parts": {"seeds_a": parts[0][0], "seeds_b": parts[1][0], "items": parts[2][0]},
        "n_images": int(n),
        "relative": relative,
    }


# ---- a score of each run as a whole -------------------------------------------------------------


def _runs_part(scores: np.ndarray, errors) -> tuple[float, float]:
    """(variance, df) of an arm's mean score over its runs: their spread over ``len - 1`` df; an arm
    of one run has no spread to measure, and its run's own sampling error (``errors[0]``, none: 0)
    stands for it, taken as known (infinite df)."""
    if len(scores) == 1:
        return (float(np.atleast_1d(errors)[0]) if errors is not None else 0.0) ** 2, math.inf
    return float(scores.var(ddof=1)) / len(scores), len(scores) - 1


def run_difference(
    a: np.ndarray,
    a_se: np.ndarray,
    b: np.ndarray,
    b_se: np.ndarray,
    *,
    level: float = 0.95,
    target_power: float = 0.8,
    log: bool = False,
) -> dict:
    """B minus A for a score of each run as a whole, each with its own sampling standard error.
    ``log``: the scores (and errors) are logs, and the difference and its interval come back as a
    ratio B / A minus 1. The runs of an arm are its sample: the spread of their scores already holds
    each score's sampling error, which is therefore not added again. ``se^2 = var_A / S_A + var_B /
    S_B`` over the runs' scores, with the Welch-Satterthwaite df (``_runs_part``). Returns
    ``arm_difference``'s keys, with ``n_runs`` ([A, B], the n of this comparison) for ``n_images``.
    (The probe's FLD under several scorer networks: ``primary_difference``.)"""
    a, a_se, b, b_se = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (a, a_se, b, b_se))
    if len(a) != len(a_se) or len(b) != len(b_se) or not len(a) or not len(b):
        raise ValueError(
            f"a score and a standard error per run: {len(a)}, {len(a_se)} (A) and {len(b)}, {len(b_se)} (B)"
        )
    parts = [_runs_part(a, a_se), _runs_part(b, b_se)]
    result = _interval(float(b.mean() - a.mean()), parts, (len(a), len(b)), level, target_power, log=log)
    return result | {"n_runs": [len(a), len(b)]}


# ---- the primary endpoint: each run's log FLD under each scorer network ------------------------------


def primary_intervals(
    a: np.ndarray, b: np.ndarray, *, level: float = 0.95, scorer_variance: bool = True
) -> dict[str, np.ndarray]:
    """``primary_difference``'s interval for T studies at once: ``a`` (T, S_a, K) and ``b`` (T,
    S_b, K) the log FLD of each run under each of the same K scorer networks, each arm of at least
    2 runs. Returns arrays (T,): ``estimate`` (mean log FLD of B minus A's), ``low``, ``high``,
    ``df``, the variance parts ``runs_a``, ``runs_b``, ``scorers`` and ``tau2`` (the arm-by-scorer
    variance estimate).

    A run's score is its mean log FLD over the networks. The runs' spread holds the run-to-run
    variation and the run-by-network wobble; the networks add one part more when the estimand is
    the ratio over the population of scorer networks, not these K alone: how the arm difference
    itself changes from one network to the next (the arm-by-scorer interaction, variance tau^2 of a
    network's log ratio), tau^2 / K. tau^2 is estimated from the spread of the K per-network arm
    differences, less the run-by-network wobble they also hold (the residual of the runs x networks
    table within each arm, already in the runs' part: not counted twice), at least 0; its df K - 1
    join Welch's."""
    runs_a, runs_b, scorers = a.shape[-2], b.shape[-2], a.shape[-1]
    if runs_a < 2 or runs_b < 2 or b.shape[-1] != scorers:
        raise ValueError(f"two arms of at least 2 runs under the same scorer networks: {a.shape} and {b.shape}")
    score_a, score_b = a.mean(-1), b.mean(-1)  # (T, S): each run's mean log FLD
    part_a, part_b = score_a.var(-1, ddof=1) / runs_a, score_b.var(-1, ddof=1) / runs_b
    per_scorer = b.mean(-2) - a.mean(-2)  # (T, K): the arm difference under each network
    tau2 = np.zeros(score_a.shape[:-1])
    if scorer_variance and scorers > 1:

        def residual(x: np.ndarray) -> np.ndarray:
            return (
                (x - x.mean(-1, keepdims=True) - x.mean(-2, keepdims=True) + x.mean((-2, -1), keepdims=True)) ** 2
            ).sum((-2, -1))

        wobble = (residual(a) + residual(b)) / ((runs_a + runs_b - 2) * (scorers - 1))
        tau2 = np.maximum(per_scorer.var(-1, ddof=1) - wobble * (1 / runs_a + 1 / runs_b), 0.0)
    part_scorers = tau2 / scorers
    dfs = np.array([runs_a - 1, runs_b - 1, max(scorers - 1, 1)])
    df, half = half_widths(np.stack([part_a, part_b, part_scorers]), dfs, level)
    estimate = per_scorer.mean(-1)
    return {
        "estimate": estimate,
        "low": estimate - half,
        "high": estimate + half,
        "df": df,
        "runs_a": part_a,
        "runs_b": part_b,
        "scorers": part_scorers,
        "tau2": tau2,
    }


def primary_difference(
    a: np.ndarray,
    b: np.ndarray,
    a_se: np.ndarray | None = None,
    b_se: np.ndarray | None = None,
    *,
    level: float = 0.95,
    target_power: float = 0.8,
    scorer_variance: bool = True,
) -> dict:
    """B / A - 1 of the geometric-mean FLD over runs and scorer networks, from ``a`` (S_a, K) and
    ``b`` (S_b, K): each run's log FLD under each of the same K networks (``primary_intervals``).
    An arm of one run has no spread to measure: its run's own sampling error on the log scale
    (``a_se``, ``b_se``: one per run) stands for its part, taken as known (``seed_spread_known``
    False), and the networks' part is not separated from the runs'.

    ``detectable``: the true ratio this design sees with probability ``target_power`` at the observed
    pooled spread of the runs (both arms', pooled: a design property, not one arm's luck) and the
    observed arm-by-scorer variance, integrated over what the estimated variances can turn out to
    be (``interval_power``); None with one run in an arm. Returns ``run_difference``'s keys with
    ``variance_parts`` (runs of A, of B, the scorer networks), ``arm_scorer_spread`` (tau, the
    standard deviation of one network's log ratio), ``scorer_seeds`` (K), ``pooled_log_spread``."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    runs_a, runs_b, scorers = len(a), len(b), a.shape[1]
    if b.shape[1] != scorers or not runs_a or not runs_b:
        raise ValueError(f"each run's log FLD under the same scorer networks: {a.shape} (A) and {b.shape} (B)")
    if min(runs_a, runs_b) > 1:
        found = {
            k: float(v[0])
            for k, v in primary_intervals(a[None], b[None], level=level, scorer_variance=scorer_variance).items()
        }
        parts = [(found["runs_a"], runs_a - 1), (found["runs_b"], runs_b - 1), (found["scorers"], max(scorers - 1, 1))]
        pooled = (parts[0][0] * runs_a * (runs_a - 1) + parts[1][0] * runs_b * (runs_b - 1)) / (runs_a + runs_b - 2)
        design = [(pooled / runs_a, runs_a - 1), (pooled / runs_b, runs_b - 1), parts[2]]
    else:  # no spread to measure in an arm: each single run's own sampling error stands for it
        parts = [_runs_part(a.mean(1), a_se), _runs_part(b.mean(1), b_se), (0.0, math.inf)]
        found, pooled, design = {"tau2": math.nan}, None, None
    estimate = float(b.mean() - a.mean())
    result = _interval(estimate, parts, (runs_a, runs_b), level, target_power, log=True)
    # at the pooled spread of the runs: a property of the design, not of one arm's luck
    result["detectable"] = (
        None
        if design is None
        else detectable(detectable_effect(design, power=target_power, level=level), target_power, True)
    )
    return result | {
        "n_runs": [runs_a, runs_b],
        "ratio": math.exp(estimate),
        "variance_parts": {"runs_a": parts[0][0], "runs_b": parts[1][0], "scorer_networks": parts[2][0]},
        # None where it is not estimated: one network, one run in an arm, or the estimand under these networks
        "arm_scorer_spread": math.sqrt(found["tau2"])
        if math.isfinite(found["tau2"]) and scorers > 1 and scorer_variance
        else None,
        "scorer_seeds": scorers,
        "pooled_log_spread": None if pooled is None else math.sqrt(pooled),
    }


@dataclass
class Estimate:
    """A mean over runs (on a ratio scale the geometric mean) and its 95 % t interval over them
    (None with one run), with the runs' values."""

    estimate: float | None
    ci95: list[float] | None
    runs: list[float]


def seed_estimate(values: list[float], *, log: bool = False, level: float = 0.95) -> Estimate:
    """The mean of ``values`` (one per run) and its t interval on ``len - 1`` df; ``log``: of the
    logs, given back as a geometric mean and its interval (a ratio scale)."""
    if not values:
        return Estimate(None, None, [])
    x = np.log(values) if log else np.asarray(values, dtype=np.float64)
    mean, back = float(x.mean()), (math.exp if log else float)
    if len(x) < 2:
        return Estimate(back(mean), None, list(map(float, values)))
    half = float(distributions.t.ppf((1 + level) / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Estimate(back(mean), [back(mean - half), back(mean + half)], list(map(float, values)))
