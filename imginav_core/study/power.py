"""The power of a t interval whose width is itself estimated: the chance that it lies wholly on
the side of a true difference, averaged over what its estimated variances (and so its width and
Welch-Satterthwaite degrees of freedom) can turn out to be; and the smallest difference seen with a
given power, both ways. Plugging the observed width into ``(t_{.975} + t_{.80}) x se`` overstates
the power at few seeds (the simulations found 0.42, 0.67 and 0.75 at 2, 3 and 5 seeds per arm
where it claimed 0.80); this is what ``stats`` reports with every interval, and what the plan uses."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from scipy import optimize, special
from scipy import stats as distributions


def _welch_df(parts: np.ndarray, dfs: np.ndarray) -> np.ndarray:
    """Satterthwaite's (1946) df of a sum of independent variance estimates, ``(sum v)^2 / sum(v^2 /
    df)`` (for two arms' seed variances, Welch's), over the leading axis of ``parts`` (P, ...) with
    df ``dfs`` (P,), every part finite; NaN where no part varies (the caller's fallback applies)."""
    dfs = dfs.reshape((-1,) + (1,) * (parts.ndim - 1))
    spread = np.where(parts > 0, parts * parts / dfs, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 0, parts.sum(0) ** 2 / spread, np.nan)


# ---- the power of an interval whose width is itself estimated ---------------------------------------

# Draws of the estimated variances over which the power is averaged (Latin hypercube: each part's
# chi^2 quantiles evenly spread): its Monte Carlo error at 80 % power is about 0.001.
VARIANCE_DRAWS = 4000


@functools.lru_cache(maxsize=256)
def _variance_ratios(dfs: tuple[float, ...]) -> np.ndarray:
    """(parts, VARIANCE_DRAWS): each part's estimated over true variance, chi^2_df / df, at
    stratified quantiles in an order of its own (parts independent); 1 for a part with infinite df,
    taken as known."""
    rng = np.random.default_rng(0)
    ratios = np.ones((len(dfs), VARIANCE_DRAWS))
    for i, df in enumerate(dfs):
        if math.isfinite(df):
            ratios[i] = distributions.chi2.ppf((rng.permutation(VARIANCE_DRAWS) + 0.5) / VARIANCE_DRAWS, df) / df
    ratios.setflags(write=False)  # cached: shared by every caller
    return ratios


def half_widths(
    parts: np.ndarray, dfs: np.ndarray, level: float, fallback_df: float = math.inf
) -> tuple[np.ndarray, np.ndarray]:
    """(df, half-width) of a t interval whose variance is the sum of ``parts`` (P, ...), each
    estimated on ``dfs`` (P,): the parts of finite df at t on their Satterthwaite df (Welch's, for
    two arms' seeds), the parts taken as known (infinite df: the items' bootstrap part, a single
    run's own sampling error) at t on ``fallback_df``, ``sqrt(t_df^2 sum_estimated +
    t_fallback^2 sum_known)``. Stretching a t on few seeds' df over a well-estimated part too
    over-covered (0.99 at 2 seeds per arm); giving that part df of its own let a seed variance
    estimated small by chance buy a narrower interval (0.89 at 2 seeds, one arm 20 x the other's
    spread). Where no estimated part varies, df is ``fallback_df``. The one formula of every
    interval here and of its power."""
    finite = np.isfinite(dfs)
    estimated, known = parts[finite].sum(0), parts[~finite].sum(0)
    df = _welch_df(parts[finite], dfs[finite]) if finite.any() else np.full(np.shape(known), np.nan)
    df = np.where(np.isnan(df), fallback_df, df)
    tail = (1 + level) / 2
    half = np.sqrt(distributions.t.ppf(tail, df) ** 2 * estimated + distributions.t.ppf(tail, fallback_df) ** 2 * known)
    return df, half


def _widths(parts: list[tuple[float, float]], level: float, fallback_df: float) -> tuple[float, np.ndarray]:
    """(the true standard error, the interval's half-widths over the draws of its estimated variances)."""
    variances = np.array([float(v) for v, _ in parts])
    dfs = np.array([float(df) for _, df in parts])
    estimated = variances[:, None] * _variance_ratios(tuple(dfs))
    return math.sqrt(variances.sum()), half_widths(estimated, dfs, level, fallback_df)[1]


def interval_power(
    effect: float, parts: list[tuple[float, float]], *, level: float = 0.95, fallback_df: float = math.inf
) -> float:
    """The chance that the interval lies wholly on the side of a true difference ``effect`` (is seen,
    and the right way round), when its variance is the sum of independent estimated parts, each
    ``(true variance, df)`` (a part of infinite df taken as known): averaged over what the estimated
    variances can turn out to be (each ``v chi^2_df / df``), the estimate normal around ``effect``
    and independent of them."""
    se, half = _widths(parts, level, fallback_df)
    if se == 0:
        return 1.0 if effect else 0.0
    return float(np.mean(special.ndtr((abs(effect) - half) / se)))


def detectable_effect(
    parts: list[tuple[float, float]], *, power: float = 0.8, level: float = 0.95, fallback_df: float = math.inf
) -> float:
    """The smallest true difference that ``interval_power`` sees with probability ``power`` (either
    way round: the power depends on its size only), on the interval's own scale (log for a ratio)."""
    if not 0 < power < 1:
        raise ValueError(f"power = {power}: expected a probability between 0 and 1")
    se, half = _widths(parts, level, fallback_df)
    if se == 0:
        return 0.0

    def seen(effect: float) -> float:
        return float(np.mean(special.ndtr((effect - half) / se))) - power

    high = se
    while seen(high) < 0:
        high *= 2
    return float(optimize.brentq(seen, 0.0, high, xtol=1e-10 * se))


def detectable(effect: float, power: float, log: bool) -> dict[str, Any]:
    """The detectable effect both ways, as the true V2 / V1 (``log``: a ratio) or V2 - V1 that is
    seen with that power: at most ``at_most`` or at least ``at_least``."""
    low, high = (math.exp(-effect), math.exp(effect)) if log else (-effect, effect)
    return {
        "power": power,
        "effect": effect,
        "scale": "ratio V2 / V1" if log else "difference V2 - V1",
        "at_most": low,
        "at_least": high,
    }


# ---- planning: two arms of runs, a score per run ------------------------------------------------------


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
    scatter with standard deviation ``spread`` (both alike; normal), integrated over both arms'
    sample variances: 3 seeds find 3 standard deviations 68 % of the time, not the 80 % of a t on
    2 (S - 1) df. (``interval_power`` for any set of variance parts.)"""
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


# ---- the primary's design, before the data: its detectable ratio both ways --------------------------

# The seed-to-seed standard deviation of a run's log FLD (its mean over the scorer networks) that
# a plan assumes by default: the largest the referee measured in the demo (0.10-0.19 across the
# runs of one arm; 2 runs per arm at 64 x 64), the larger for a plan that does not over-promise.
# An assumption until the real study's runs measure it.
ASSUMED_LOG_SEED_SPREAD = 0.19
ASSUMED_LOG_SEED_SPREAD_SOURCE = (
    "the largest seed-to-seed standard deviation of a run's log FLD measured in the demo (0.10-0.19 "
    "across the runs of one arm, 2 runs per arm at 64 x 64 pixels)"
)
# The standard deviation of one scorer network's log FLD ratio V2 / V1 around the mean over
# networks (the arm-by-scorer interaction): about 0.07 in the demo.
ASSUMED_ARM_SCORER_SPREAD = 0.07


def primary_design(
    seeds: int,
    *,
    spread: float = ASSUMED_LOG_SEED_SPREAD,
    scorer_seeds: int,
    scorer_spread: float = ASSUMED_ARM_SCORER_SPREAD,
    power: float,
    level: float,
) -> dict[str, Any]:
    """The primary endpoint's design as plain data for a plan's protocol: with ``seeds`` runs per
    arm whose log FLD scatters with standard deviation ``spread`` and ``scorer_seeds`` networks
    whose log ratio scatters by ``scorer_spread`` (0: the estimand under these networks only), the
    true V2 / V1 seen with probability ``power`` by the decision's ``level`` interval
    (``stats.primary_difference``: Welch's df over the runs' and the networks' parts, its power
    integrated over their estimates): at most ``ratio_at_most`` or at least ``ratio_at_least``.
    (``analysis.criteria.planned_primary_effect`` takes the power, level and estimand from the rule.)"""
    if seeds < 2 or scorer_seeds < 1 or not spread > 0 or scorer_spread < 0:
        raise ValueError(
            f"seeds {seeds}, scorer seeds {scorer_seeds}, spreads {spread} and {scorer_spread}: expected at least "
            "2 runs per arm, 1 scorer network, a positive seed spread and a non-negative scorer spread"
        )
    parts = [(spread**2 / seeds, seeds - 1)] * 2
    if scorer_spread > 0 and scorer_seeds > 1:
        parts.append((scorer_spread**2 / scorer_seeds, scorer_seeds - 1))
    effect = detectable_effect(parts, power=power, level=level)
    low, high = math.exp(-effect), math.exp(effect)
    return {
        "seeds_per_arm": seeds,
        "log_seed_spread": spread,
        "log_seed_spread_source": ASSUMED_LOG_SEED_SPREAD_SOURCE
        if spread == ASSUMED_LOG_SEED_SPREAD
        else "assumed by the plan",
        "scorer_seeds": scorer_seeds,
        "arm_scorer_spread": scorer_spread,
        "level": level,
        "power": power,
        "log_effect": effect,
        "ratio_at_most": low,
        "ratio_at_least": high,
        "text": f"with {seeds} runs per arm, V2's FLD would have to be at most {low:.2f} x or at least {high:.2f} x "
        f"V1's to be seen {100 * power:.0f} % of the time",
    }
