"""A bootstrap interval for any statistic of one sample: how the layout scorer gives each score
its uncertainty."""

from __future__ import annotations

from collections.abc import Callable

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
