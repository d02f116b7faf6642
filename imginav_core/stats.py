"""Confidence intervals by resampling, numpy only: for any statistic of one sample, and for the
difference between two arms of seeded runs measured on the same images."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float | np.ndarray],
    n: int,
    *,
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
    estimate: float | np.ndarray | None = None,
) -> np.ndarray:
    """Bootstrap interval of ``statistic`` over a sample of ``n`` items.

    ``statistic(idx)`` gets an int array of ``n`` indices drawn with replacement (the sample's
    items, some repeated) and returns a number or a 1-D array of numbers; the statistic decides
    how to look its items up, so costly per-item work (network features) is done once by the
    caller and only indexed here. Returns ``[lo, hi]``, or ``(k, 2)`` for ``k`` numbers.

    Without ``estimate``: the percentile interval. With ``estimate`` (the statistic on the whole
    sample): the same interval moved by ``estimate - median of the resamples``, so that it is
    centred where the estimate is. Statistics of a whole set (a Fréchet distance, a recall, a
    coverage) are biased by the repeats in a resample (a set with repeats has fewer distinct
    items), nearly all resamples fall on one side, and the plain percentile interval can miss the
    estimate altogether; the resamples' spread is still the sampling spread. For a mean the shift
    is about zero and the two intervals agree. (Efron's bias-corrected percentiles would do the same
    job but collapse to a point when the estimate is the extreme of the resamples, as a coverage is.)
    The caller clips the interval to the statistic's range if it has one.

    NaN resamples (a statistic undefined on a degenerate draw) are left out; an interval with no
    finite resample is NaN. The same seed gives the same interval.
    """
    if n < 1:
        raise ValueError("bootstrap_ci needs at least one item")
    if resamples < 1:
        raise ValueError(f"resamples = {resamples}; expected at least 1")
    if not 0 < level < 1:
        raise ValueError(f"level = {level}; expected a number between 0 and 1")
    rng = np.random.default_rng(seed)
    draws = [np.asarray(statistic(rng.integers(0, n, size=n)), dtype=np.float64) for _ in range(resamples)]
    scalar = draws[0].ndim == 0
    values = np.array([np.atleast_1d(d) for d in draws])  # (resamples, k)
    estimates = None if estimate is None else np.broadcast_to(np.asarray(estimate, dtype=np.float64), values.shape[1:])
    tails = np.array([(1 - level) / 2, (1 + level) / 2])
    interval = np.full((values.shape[1], 2), np.nan)
    for column in range(values.shape[1]):
        finite = values[:, column][np.isfinite(values[:, column])]
        if not len(finite):
            continue
        interval[column] = np.quantile(finite, tails)
        if estimates is not None and np.isfinite(estimates[column]):
            interval[column] += estimates[column] - np.median(finite)
    return interval[0] if scalar else interval


# ---- comparing two arms of seeded runs on the same images -----------------------------------------


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (``p`` in (0.5, 1)), by integrating the density; the normal's for
    ``df`` infinite. numpy only: this project has no scipy."""
    if not 0.5 <= p < 1:
        raise ValueError(f"p = {p}; expected 0.5 <= p < 1")
    x = np.linspace(0.0, 400.0, 800_001)
    if math.isinf(df):
        log_pdf = -0.5 * x * x - 0.5 * math.log(2 * math.pi)
    else:
        log_pdf = (
            math.lgamma((df + 1) / 2)
            - math.lgamma(df / 2)
            - 0.5 * math.log(df * math.pi)
            - (df + 1) / 2 * np.log1p(x * x / df)
        )
    pdf = np.exp(log_pdf)
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x))])
    return float(np.interp(p, cdf, x))


def cluster_weights(groups: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, N) counts of a two-stage resample of N items: groups (scenes) drawn with
    replacement, then, within each drawn group, its items drawn with replacement. Rooms of one
    scene are not independent layouts, so the scene is the unit that is resampled first."""
    order = np.argsort(np.asarray(groups), kind="stable")
    _, starts, sizes = np.unique(np.asarray(groups)[order], return_index=True, return_counts=True)
    weights = np.zeros((resamples, len(order)))
    for b in range(resamples):
        drawn = rng.integers(0, len(sizes), len(sizes))
        # within each drawn group, as many of its items drawn with replacement as it has
        lengths = sizes[drawn]
        first = np.repeat(starts[drawn], lengths)
        offsets = np.floor(rng.random(lengths.sum()) * np.repeat(lengths, lengths)).astype(np.int64)
        weights[b] = np.bincount(order[first + offsets], minlength=len(order))
    return weights


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


def _seed_resample(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean over seeds drawn with replacement, per bootstrap row. The draws' deviations from the
    row's mean are scaled by sqrt(S / (S - 1)): a bootstrap over S seeds otherwise shrinks the
    seed-to-seed variance by (S - 1) / S."""
    rows, seeds = per_seed.shape
    if seeds == 1:
        return per_seed[:, 0]
    drawn = np.take_along_axis(per_seed, rng.integers(0, seeds, (rows, seeds)), axis=1)
    centre = per_seed.mean(1, keepdims=True)
    return (centre + (drawn - centre) * math.sqrt(seeds / (seeds - 1))).mean(1)


def _interval(estimate: float, replicates: np.ndarray, seeds: tuple[int, int], level: float) -> dict:
    """``estimate +- t * se``: the bootstrap's standard error with a t quantile of 2 (S - 1)
    degrees of freedom for S seeds per arm. With three seeds whose spread matters, the normal's
    1.96 on the same standard error covered the truth 90 % of the time in tests/test_stats.py's
    simulation (plain percentiles less), the t quantile at least the nominal 95 %. With one seed
    in an arm the seed-to-seed spread is unknown: the interval is the images' alone (normal
    quantile) and is marked so."""
    finite = replicates[np.isfinite(replicates)]
    se = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    fewest = min(seeds)
    df = 2 * (fewest - 1) if fewest > 1 else math.inf
    half = t_quantile((1 + level) / 2, df) * se
    return {
        "estimate": float(estimate),
        "ci95": [float(estimate - half), float(estimate + half)],
        "se": se,
        "n_seeds": list(seeds),
        "seed_spread_known": fewest > 1,
    }


def arm_difference(
    a: PerImage,
    b: PerImage,
    groups: np.ndarray,
    *,
    relative: bool = False,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """B minus A (``relative``: B / A - 1) on the same N images, with a hierarchical-bootstrap
    interval: seeds (each arm's own), then scenes (``groups``), then images within scenes; the
    images drawn are the same for both arms, so the comparison is paired per image.
    Returns ``estimate``, ``ci95``, ``se``, ``n_seeds`` ([A, B]), ``n_images``."""
    n = a.numerator.shape[1]
    if b.numerator.shape[1] != n or len(groups) != n:
        raise ValueError(
            f"the arms must be measured on the same images: {n}, {b.numerator.shape[1]} and {len(groups)} groups"
        )
    rng = np.random.default_rng(seed)
    weights = cluster_weights(groups, resamples, rng)
    ones = np.ones((1, n))

    def compare(value_a, value_b):
        return value_b / value_a - 1.0 if relative else value_b - value_a

    estimate = compare(a.per_seed(ones).mean(), b.per_seed(ones).mean())
    replicates = compare(_seed_resample(a.per_seed(weights), rng), _seed_resample(b.per_seed(weights), rng))
    return _interval(estimate, replicates, (a.seeds, b.seeds), level) | {"n_images": int(n)}


def run_difference(
    a: np.ndarray,
    a_se: np.ndarray,
    b: np.ndarray,
    b_se: np.ndarray,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """B minus A for a score of each run as a whole (the probe's FLD of each seed's generated
    layouts), each with its own sampling standard error: seeds resampled as in ``arm_difference``,
    then each drawn run's score perturbed by its normal sampling error."""
    rng = np.random.default_rng(seed)
    a, a_se, b, b_se = (np.asarray(v, dtype=np.float64) for v in (a, a_se, b, b_se))

    def arm(values, se):
        seeds = len(values)
        if seeds == 1:
            return values[0] + se[0] * rng.standard_normal(resamples)
        idx = rng.integers(0, seeds, (resamples, seeds))
        drawn = values[idx] + se[idx] * rng.standard_normal((resamples, seeds))
        centre = values.mean()
        return (centre + (drawn - centre) * math.sqrt(seeds / (seeds - 1))).mean(1)

    return _interval(b.mean() - a.mean(), arm(b, b_se) - arm(a, a_se), (len(a), len(b)), level)
