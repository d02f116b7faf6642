"""The intervals the decision rests on, on synthetic data whose truth is known: each simulation
draws many studies at once (numpy, vectorised) and counts how often the interval holds the truth."""

import math

import numpy as np
import pytest
from scipy import stats as distributions

from imginav_core.study.stats import (
    PerImage,
    arm_difference,
    cluster_weights,
    detectable_effect,
    planned_detectable_effect,
    power,
    run_difference,
    seeds_needed,
)

SPREADS = {"equal": (1.0, 1.0), "unequal": (1.0, 0.05)}  # each arm's seed-to-seed sd: one 20 x the other


def test_a_scene_is_resampled_whole_before_its_rooms():
    groups = np.array([0, 0, 0, 0, 1])  # one scene of four layouts, one of one
    weights = cluster_weights(groups, 2000, np.random.default_rng(0))
    assert np.all(weights.sum(1)[weights[:, 4] == 0] == 8)  # scene 0 drawn twice: 8 layouts
    # a resample with the single layout drawn twice holds none of scene 0
    assert np.all(weights[weights[:, 4] == 2][:, :4] == 0)
    assert np.allclose(weights.mean(0), 1.0, atol=0.08)
    # within a drawn scene its layouts are drawn with replacement: some resamples repeat one
    assert np.any(weights[:, :4].max(1) > 2)


def _run_studies(rng, trials, seeds, spreads, run_se=0.02):
    """Each run's score (true difference 0): its arm's level, the run's own offset of the arm's
    seed-to-seed spread, and its sampling error (which the score's spread therefore holds)."""
    a, b = (rng.normal(0, sd, (trials, seeds)) + rng.normal(0, run_se, (trials, seeds)) for sd in spreads)
    return a, b, np.full(seeds, run_se)


@pytest.mark.parametrize("seeds", [2, 3, 5])
@pytest.mark.parametrize("spreads", SPREADS, ids=list(SPREADS))
def test_run_level_intervals_cover_the_truth_when_one_arm_scatters_more(seeds, spreads):
    """With a t on 2 (S - 1) df these covered 0.87 (2 seeds), 0.90 (3) and 0.92 (5) of the time
    when one arm's seeds scatter 20 x more; Welch's df follow each arm's own spread."""
    a, b, se = _run_studies(np.random.default_rng(seeds), 2000, seeds, SPREADS[spreads])
    covered = [
        low <= 0.0 <= high for low, high in (run_difference(x, se, y, se)["ci95"] for x, y in zip(a, b, strict=True))
    ]
    # nominal 95 %; 2000 studies give a binomial standard error of 0.5 points
    assert np.mean(covered) >= 0.93


def _image_studies(rng, trials, seeds, spreads, difference=0.5, images=40, scenes=10):
    """Per-image errors of two arms on the same images: a shared scene and image effect (what
    pairing cancels), a per-run offset of the arm's seed spread, a run-by-image wobble."""
    groups = rng.integers(0, scenes, (trials, images))
    shared = np.take_along_axis(rng.normal(0, 1, (trials, scenes)), groups, 1) + rng.normal(0, 1, (trials, images))

    def arm(offset, sd):
        return (
            offset
            + shared[:, None, :]
            + rng.normal(0, sd, (trials, seeds, 1))
            + rng.normal(0, 0.5, (trials, seeds, images))
        )

    return arm(0.0, spreads[0]), arm(difference, spreads[1]), groups


@pytest.mark.parametrize("seeds", [2, 3, 5])
@pytest.mark.parametrize("spreads", SPREADS, ids=list(SPREADS))
def test_per_image_intervals_cover_the_truth_at_about_the_nominal_rate(seeds, spreads):
    a, b, groups = _image_studies(np.random.default_rng(10 + seeds), 600, seeds, SPREADS[spreads])
    covered = []
    for trial in range(len(a)):
        result = arm_difference(
            PerImage.mean_of(a[trial]), PerImage.mean_of(b[trial]), groups[trial], resamples=200, seed=trial
        )
        covered.append(result["ci95"][0] <= 0.5 <= result["ci95"][1])
    # nominal 95 %; 600 studies give a binomial standard error of 0.9 points
    assert np.mean(covered) >= 0.93


def test_the_seed_spread_widens_the_interval_and_one_seed_is_marked():
    rng = np.random.default_rng(1)

    def one(seeds, spread):
        a, b, groups = _image_studies(rng, 1, seeds, (spread, spread))
        return arm_difference(PerImage.mean_of(a[0]), PerImage.mean_of(b[0]), groups[0], seed=0)

    narrow, wide = one(3, 0.0), one(3, 2.0)
    assert np.diff(wide["ci95"])[0] > 3 * np.diff(narrow["ci95"])[0]
    single = one(1, 0.3)
    assert single["n_seeds"] == [1, 1] and not single["seed_spread_known"] and narrow["seed_spread_known"]


def test_a_ratio_of_sums_and_a_relative_difference():
    # IoU-like: intersections over unions, 2 classes; arm B has every intersection halved
    union = np.full((2, 50, 2), 10.0)
    inter = np.full((2, 50, 2), 8.0)
    a, b = PerImage(inter, union), PerImage(inter / 2, union)
    result = arm_difference(a, b, np.arange(50), resamples=200)
    assert result["estimate"] == pytest.approx(-0.4)
    relative = arm_difference(a, b, np.arange(50), relative=True, resamples=200)
    assert relative["estimate"] == pytest.approx(-0.5) and relative["n_images"] == 50 and relative["relative"]


def test_a_relative_interval_is_taken_on_the_log_ratio():
    """B about twice A, seeds that scatter: the interval of B / A - 1 is symmetric on the log scale
    (a ratio's spread is skewed), not on the ratio's own."""
    rng = np.random.default_rng(3)
    a = PerImage.mean_of(1.0 + 0.1 * rng.normal(size=(3, 1)) + 0.05 * rng.normal(size=(3, 60)))
    b = PerImage.mean_of(2.0 + 0.3 * rng.normal(size=(3, 1)) + 0.05 * rng.normal(size=(3, 60)))
    result = arm_difference(a, b, np.arange(60), relative=True, resamples=500)
    low, high = result["ci95"]
    ratio = 1 + result["estimate"]
    assert result["relative"] and low > -1
    assert math.log(1 + high) - math.log(ratio) == pytest.approx(math.log(ratio) - math.log(1 + low), rel=1e-9)
    assert high - result["estimate"] > result["estimate"] - low  # wider above: the ratio's skew


def test_a_ratio_to_a_value_near_zero_is_not_taken():
    """The deterministic arm's seeds 0.003 and 0.0006: a ratio to their mean could be anything
    (taken, it was 18.8 with the interval [-763, 800]); the absolute difference is reported."""
    a = PerImage.mean_of(np.array([[0.003], [0.0006]]) * np.ones((2, 30)))
    b = PerImage.mean_of(np.array([[0.036], [0.035]]) * np.ones((2, 30)))
    result = arm_difference(a, b, np.arange(30), relative=True, resamples=200, names=("V1", "V2"))
    assert result["relative"] is False and "V1's value" in result["note"] and "absolute" in result["note"]
    assert result["estimate"] == pytest.approx(0.0355 - 0.0018)
    low, high = result["ci95"]
    assert low < result["estimate"] < high and high - low < 0.1
    # a value at or below zero: no ratio either
    zero = PerImage.mean_of(np.array([[0.0], [0.001]]) * np.ones((2, 30)))
    assert arm_difference(zero, b, np.arange(30), relative=True, resamples=200)["relative"] is False


def test_run_level_scores_with_their_own_sampling_error():
    clear = run_difference([10.0, 11.0, 10.5], [0.2] * 3, [5.0, 5.5, 5.2], [0.2] * 3)
    assert clear["ci95"][1] < 0 and clear["estimate"] == pytest.approx(5.2333 - 10.5, abs=1e-3)
    assert clear["n_runs"] == [3, 3] and "n_images" not in clear
    noisy = run_difference([10.0, 4.0, 7.0], [0.2] * 3, [5.0, 9.0, 6.0], [0.2] * 3)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1]


def test_a_runs_sampling_error_is_not_counted_twice():
    """The runs' scores scatter by their sampling error too: their spread is the whole story, and
    a larger error per run (the same scores) must not widen the interval again."""
    a, b = [10.0, 11.0, 10.5], [5.0, 5.5, 5.2]
    small, large = run_difference(a, [0.01] * 3, b, [0.01] * 3), run_difference(a, [2.0] * 3, b, [2.0] * 3)
    assert small["ci95"] == pytest.approx(large["ci95"])
    assert small["se"] == pytest.approx(math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3))
    # one run in an arm: its own sampling error is all there is, and the spread is unknown
    single = run_difference([10.0], [0.5], [12.0], [0.5])
    assert not single["seed_spread_known"] and single["se"] == pytest.approx(math.sqrt(0.5))


def _found(effect, seeds, studies=2000, seed=5):
    """How often run_difference's interval excludes zero for a true difference ``effect`` between
    arms whose runs scatter with standard deviation 1."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, (studies, seeds)), rng.normal(effect, 1, (studies, seeds))
    intervals = [run_difference(x, np.zeros(seeds), y, np.zeros(seeds))["ci95"] for x, y in zip(a, b, strict=True)]
    return np.mean([not low <= 0 <= high for low, high in intervals])


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_planned_power_is_that_of_the_interval(seeds):
    """The plan's power is the interval's: at the effect the plan says is found 80 % of the time,
    the simulated studies find it about that often; 3 seeds need about 3.5 seed standard
    deviations (not the 3 of a t on 2 (S - 1) df: Welch's df vary from study to study)."""
    effect = planned_detectable_effect(1.0, seeds)
    assert power(effect, 1.0, seeds) == pytest.approx(0.8, abs=1e-3)
    assert _found(effect, seeds) == pytest.approx(0.8, abs=0.025)
    assert power(2.0, 1.0, seeds) == pytest.approx(_found(2.0, seeds, seed=6), abs=0.025)


def test_the_detectable_effect_of_a_measured_difference():
    """The MDE reported with an interval: (t_0.975 + t_0.80) x se on the interval's own df."""
    result = run_difference([10.0, 11.0, 10.5], [0.2] * 3, [5.0, 6.5, 5.2], [0.2] * 3)
    q = distributions.t.ppf([0.975, 0.8], result["df"])
    assert result["mde"] == pytest.approx(q.sum() * result["se"])
    assert 2 <= result["df"] <= 4  # Welch: between one arm's S - 1 and both arms' 2 (S - 1)
    # the same spread measured on more seeds: a smaller detectable effect
    wider = run_difference([10.0, 11.0, 10.5] * 2, [0.2] * 6, [5.0, 6.5, 5.2] * 2, [0.2] * 6)
    assert wider["mde"] < result["mde"] / 1.5
    assert detectable_effect(math.sqrt(2 / 3), 4) == pytest.approx(3.04, abs=0.01)  # 3 seeds, equal spreads


def test_power_and_the_seeds_a_difference_needs():
    # 3 seeds find 2 seed standard deviations about a third of the time, 5 about three quarters
    assert power(2.0, 1.0, 3) < 0.4 < 0.75 < power(2.0, 1.0, 5) < 0.8
    assert seeds_needed(2.0, 1.0) == 6 and seeds_needed(3.6, 1.0) == 3 and seeds_needed(0.01, 1.0, most=10) is None
    assert power(4.0, 2.0, 5) == power(2.0, 1.0, 5) == power(-2.0, 1.0, 5)  # only |effect| in spreads matters
    assert [power(2.0, 1.0, s) for s in range(2, 9)] == sorted(power(2.0, 1.0, s) for s in range(2, 9))
    with pytest.raises(ValueError, match="at least 2 runs"):
        power(1.0, 1.0, 1)
