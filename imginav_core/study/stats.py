"""Confidence intervals for the difference between two arms of seeded runs measured on the same
images: a t interval whose degrees of freedom follow each arm's own seed-to-seed spread
(Welch-Satterthwaite); and the power of such a comparison."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as distributions

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


def satterthwaite_df(parts: list[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of independent variance estimates, each ``(variance, df)``:
    ``(sum v)^2 / sum(v^2 / df)`` (Satterthwaite 1946; for two arms' seed variances, Welch's
    test). A part with infinite df (a variance taken as known) adds to the sum only. Infinite when
    nothing varies."""
    total = sum(v for v, _ in parts)
    spread = sum(v * v / df for v, df in parts if v > 0 and math.isfinite(df))
    if not math.isfinite(total):
        return math.nan
    return total * total / spread if spread > 0 else math.inf


def detectable_effect(se: float, df: float, *, power: float = 0.8, level: float = 0.95) -> float:
    """The minimal detectable effect (MDE): the true difference that a two-sided test at
    ``1 - level`` finds with probability ``power``, for a difference measured with standard error
    ``se`` on ``df`` degrees of freedom: ``(t_{(1+level)/2, df} + t_{power, df}) x se``."""
    return float((distributions.t.ppf((1 + level) / 2, df) + distributions.t.ppf(power, df)) * se)


@functools.lru_cache(maxsize=64)
def _welch_half_widths(seeds: int, level: float, grid: int = 400) -> np.ndarray:
    """Half-widths of the Welch interval of two arms of ``seeds`` runs that scatter alike, in units
    of the true standard error of their difference, over a grid of quantiles of both arms' sample
    variances (each sigma^2 chi^2_{S-1} / (S - 1)): what the interval's width can turn out to be."""
    k = seeds - 1
    ratio = distributions.chi2.ppf((np.arange(grid) + 0.5) / grid, k) / k  # sample over true variance
    a, b = ratio[:, None], ratio[None, :]
    df = (a + b) ** 2 * k / (a * a + b * b)  # between S - 1 and 2 (S - 1)
    # t's quantile is smooth in df: tabulated once and interpolated, not computed 160,000 times
    table = np.linspace(k, 2 * k, 2001)
    quantile = np.interp(df, table, distributions.t.ppf((1 + level) / 2, table))
    half_widths = quantile * np.sqrt((a + b) / 2)
    half_widths.setflags(write=False)  # cached: shared by every caller
    return half_widths


def _power_in_se(shift: float, half_widths: np.ndarray) -> float:
    """The chance that the interval excludes zero for a true difference of ``shift`` standard
    errors: the estimate is normal around it, independent of the sample variances."""
    return float(np.mean(special.ndtr(shift - half_widths) + special.ndtr(-half_widths - shift)))


def _check_plan(spread: float, seeds: int) -> None:
    if seeds < 2:
        raise ValueError(f"seeds = {seeds}: a run-to-run spread needs at least 2 runs per arm")
    if not spread > 0:
        raise ValueError(f"spread = {spread}: expected the runs' standard deviation, > 0")


def power(effect: float, spread: float, seeds: int, *, level: float = 0.95) -> float:
    """The chance that the 95 % interval of ``run_difference`` (Welch's df) between two arms of
    ``seeds`` runs each excludes zero, for a true difference ``effect`` between arms whose runs
    scatter with standard deviation ``spread`` (both alike; normal). Integrated over both arms'
    sample variances, since at few seeds Welch's df, and so the interval's width, vary from study to
    study: 3 seeds find 3 standard deviations 68 % of the time, not the 80 % of a t on 2 (S - 1)
    df."""
    _check_plan(spread, seeds)
    return _power_in_se(abs(effect) / (spread * math.sqrt(2 / seeds)), _welch_half_widths(seeds, level))


def planned_detectable_effect(spread: float, seeds: int, *, target: float = 0.8, level: float = 0.95) -> float:
    """The smallest true difference that ``power`` finds with probability ``target``."""
    _check_plan(spread, seeds)
    half_widths = _welch_half_widths(seeds, level)
    low, high = 0.0, 1.0
    while _power_in_se(high, half_widths) < target:
        high *= 2
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if _power_in_se(middle, half_widths) < target else (low, middle)
    return high * spread * math.sqrt(2 / seeds)


def seeds_needed(
    effect: float, spread: float, *, target: float = 0.8, level: float = 0.95, most: int = 100
) -> int | None:
    """The fewest runs per arm (2 or more) with which ``power`` reaches ``target``; None when even
    ``most`` do not."""
    for seeds in range(2, most + 1):
        if power(effect, spread, seeds, level=level) >= target:
            return seeds
    return None


def _interval(
    estimate: float, variance: float, df: float, seeds: tuple[int, int], level: float, *, log: bool = False
) -> dict:
    """``estimate +- t se`` (``se^2 = variance``, t on ``df`` degrees of freedom), with the MDE at
    80 % power for the same ``se`` and df. ``log``: the estimate, the interval and the MDE are of a
    log ratio and come back as ratios minus 1 (``se`` stays on the log scale)."""
    se = math.sqrt(variance) if variance >= 0 else math.nan
    # detectable_effect's quantiles, taken once: the simulations call this thousands of times
    two_sided, powered = distributions.t.ppf([(1 + level) / 2, 0.8], df)
    half = float(two_sided) * se
    low, high, mde = estimate - half, estimate + half, float(two_sided + powered) * se
    if log:
        estimate, low, high, mde = (math.expm1(v) for v in (estimate, low, high, mde))
    return {
        "estimate": float(estimate),
        "ci95": [float(low), float(high)],
        "se": se,
        "df": float(df) if math.isfinite(df) else None,
        "mde": float(mde),
        "n_seeds": list(seeds),
        "seed_spread_known": min(seeds) > 1,
    }


def _seed_part(values: np.ndarray, log: bool) -> tuple[float, float]:
    """The variance of an arm's mean over its seeds, from their spread, and its df; on the log
    scale by the delta method. One seed: no spread to measure (nothing added)."""
    seeds = len(values)
    if seeds == 1:
        return 0.0, math.inf
    variance = float(values.var(ddof=1)) / seeds
    return (variance / float(values.mean()) ** 2 if log else variance), seeds - 1


def _not_clearly_positive(values: np.ndarray, rows: np.ndarray, name: str, level: float) -> str:
    """Why a ratio to this arm's value is not taken, or "": a run's value or a resample's is not
    above zero, or the arm's own interval over its seeds reaches zero (its mean is not told from
    zero, so the ratio's size is the noise's)."""
    shown = f"{name}'s value ({values.mean():.3g} over {len(values)} run(s): {', '.join(f'{v:.3g}' for v in values)})"
    finite = rows[np.isfinite(rows)]
    if np.any(values <= 0) or np.any(finite <= 0):
        return f"{shown} is not above zero"
    if len(values) > 1:
        low = values.mean() - distributions.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(
            len(values)
        )
        if low <= 0:
            return f"{shown} is not clearly above zero (its interval over the runs reaches {low:.3g})"
    return ""


def arm_difference(
    a: PerImage,
    b: PerImage,
    groups: np.ndarray,
    *,
    relative: bool = False,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
) -> dict:
    """B minus A (``relative``: B / A - 1) on the same N items, ``estimate +- t se``. ``se^2`` has
    two kinds of parts: each arm's seeds (the variance of its mean over its seeds, from their
    spread), and the items (the variance of the arm difference under a bootstrap over scenes,
    given by ``groups``, then items within scenes; the same items drawn for both arms, so the
    comparison is paired). t's degrees of freedom: Welch-Satterthwaite's from the two arms' seed
    variances, so that an arm whose seeds scatter more, or fewer seeds, weigh as they should; the
    items' part (scenes - 1 df, well estimated) does not add to them, since a seed variance
    estimated small by chance would otherwise buy a narrower interval just when it is least
    reliable (at 2 and 3 seeds the intervals then covered 90 % instead of 95 %). Without any seed
    spread (one seed per arm, or identical runs) t has the scenes' df. A run's own item noise is
    in both parts (its seed value, and the items' resamples), so the interval errs on the wide side
    when runs barely differ.

    ``relative``: the interval of log(B / A), transformed back to ``[exp(lo) - 1, exp(hi) - 1]``
    (a ratio's sampling distribution is skewed, its log's is not). When either arm's value is not
    clearly above zero a ratio is meaningless (a denominator near zero makes it any size): the
    absolute difference is reported instead, ``relative`` False and a ``note`` saying why.
    ``names`` name the arms in that note.

    Returns ``estimate``, ``ci95``, ``se``, ``df``, ``mde`` (the minimal detectable effect at 80 %
    power, ``detectable_effect``), ``n_seeds`` ([A, B]), ``seed_spread_known`` (False with one
    seed in an arm: its seeds' part is then missing), ``n_images``, and with ``relative`` also
    ``relative`` and, when it is False, ``note``."""
    n = a.numerator.shape[1]
    if b.numerator.shape[1] != n or len(groups) != n:
        raise ValueError(
            f"the arms must be measured on the same images: {n}, {b.numerator.shape[1]} and {len(groups)} groups"
        )
    weights = cluster_weights(groups, resamples, np.random.default_rng(seed))
    ones = np.ones((1, n))
    seeds_a, seeds_b = a.per_seed(ones)[0], b.per_seed(ones)[0]  # each run's value over all items
    rows_a, rows_b = a.per_seed(weights).mean(1), b.per_seed(weights).mean(1)  # the arms' values, items resampled
    note = ""
    if relative:
        note = _not_clearly_positive(seeds_a, rows_a, names[0], level) or _not_clearly_positive(
            seeds_b, rows_b, names[1], level
        )
    log = relative and not note

    def scale(values):
        return np.log(values) if log else values

    items = scale(rows_b) - scale(rows_a)
    items = items[np.isfinite(items)]
    seed_parts = [_seed_part(seeds_a, log), _seed_part(seeds_b, log)]
    scenes = len(np.unique(groups))
    df = satterthwaite_df(seed_parts) if any(v > 0 for v, _ in seed_parts) else max(scenes - 1, 1)
    variance = sum(v for v, _ in seed_parts) + (float(items.var(ddof=1)) if len(items) > 1 else math.nan)
    estimate = float(scale(seeds_b.mean()) - scale(seeds_a.mean()))
    result = _interval(estimate, variance, df, (a.seeds, b.seeds), level, log=log) | {"n_images": int(n)}
    if relative:
        result["relative"] = log
        if note:
            result["note"] = (
                f"{note}: a ratio to it is not taken; the absolute difference {names[1]} - {names[0]} is reported"
            )
    return result


def run_difference(
    a: np.ndarray,
    a_se: np.ndarray,
    b: np.ndarray,
    b_se: np.ndarray,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    log: bool = False,
) -> dict:
    """B minus A for a score of each run as a whole (the probe's FLD of each seed's generated layouts),
    each with its own sampling standard error. ``log``: the scores (and errors) are logs, and
    the difference, its interval and MDE come back as a ratio B / A minus 1. The runs of an arm
    are its sample: the spread of their scores already holds each score's sampling error, which
    is therefore not added again. ``se^2 = var_A / S_A + var_B / S_B`` over the runs' scores,
    with the Welch-Satterthwaite df. An arm of one run has no spread to measure: its run's own
    sampling error is all there is (taken as known; ``seed_spread_known`` False). The mean over
    runs needs no resampling; ``resamples`` and ``seed`` are taken so that callers pass
    ``arm_difference``'s settings alike. Returns ``arm_difference``'s keys, with ``n_runs`` ([A,
    B], the n of this comparison) for ``n_images``."""
    a, a_se, b, b_se = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (a, a_se, b, b_se))
    if len(a) != len(a_se) or len(b) != len(b_se) or not len(a) or not len(b):
        raise ValueError(
            f"a score and a standard error per run: {len(a)}, {len(a_se)} (A) and {len(b)}, {len(b_se)} (B)"
        )

    def part(values: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
        if len(values) == 1:
            return float(errors[0]) ** 2, math.inf
        return float(values.var(ddof=1)) / len(values), len(values) - 1

    parts = [part(a, a_se), part(b, b_se)]
    variance, df = sum(v for v, _ in parts), satterthwaite_df(parts)
    return _interval(float(b.mean() - a.mean()), variance, df, (len(a), len(b)), level, log=log) | {
        "n_runs": [len(a), len(b)]
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
