"""The intervals the decision rests on, on synthetic paired data whose truth is known."""

import numpy as np
import pytest

from imginav_core.stats import PerImage, arm_difference, cluster_weights, run_difference, t_quantile


def test_t_quantiles_match_the_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=2e-3)
    assert t_quantile(0.975, 4) == pytest.approx(2.776, abs=2e-3)
    assert t_quantile(0.975, float("inf")) == pytest.approx(1.960, abs=2e-3)


def test_a_scene_is_resampled_whole_before_its_rooms():
    groups = np.array([0, 0, 0, 0, 1])  # one scene of four layouts, one of one
    weights = cluster_weights(groups, 2000, np.random.default_rng(0))
    assert np.all(weights.sum(1)[weights[:, 4] == 0] == 8)  # scene 0 drawn twice: 8 layouts
    # a resample with the single layout drawn twice holds none of scene 0
    assert np.all(weights[weights[:, 4] == 2][:, :4] == 0)
    assert np.allclose(weights.mean(0), 1.0, atol=0.08)


def _simulated_arms(rng, seeds, seed_spread, true_difference, images=120, scenes=30):
    """Per-image errors of two arms on the same images: a shared scene and image effect (what
    pairing cancels), a per-run offset of spread ``seed_spread``, a run-by-image wobble."""
    groups = rng.integers(0, scenes, images)
    shared = rng.normal(0, 1, scenes)[groups] + rng.normal(0, 1, images)

    def arm(offset):
        return offset + shared + rng.normal(0, seed_spread, (seeds, 1)) + rng.normal(0, 0.5, (seeds, images))

    return PerImage.mean_of(arm(0.0)), PerImage.mean_of(arm(true_difference)), groups


@pytest.mark.parametrize("seeds, seed_spread", [(3, 0.3), (3, 1.0), (5, 0.3)])
def test_the_interval_covers_the_true_difference_at_about_the_nominal_rate(seeds, seed_spread):
    rng = np.random.default_rng(seeds * 10 + int(seed_spread * 10))
    covered = []
    for trial in range(150):
        a, b, groups = _simulated_arms(rng, seeds, seed_spread, 0.5)
        low, high = arm_difference(a, b, groups, resamples=300, seed=trial)["ci95"]
        covered.append(low <= 0.5 <= high)
    # nominal 95 %; 150 trials give a binomial standard error of 1.8 points
    assert 0.90 <= np.mean(covered) <= 1.0


def test_a_normal_interval_over_three_seeds_would_have_been_too_narrow():
    """Why the interval uses a t quantile: the same bootstrap standard error with the normal's
    1.96 undercovers when the seeds' spread matters and there are three of them."""
    rng = np.random.default_rng(7)
    covered_t, covered_normal = [], []
    for trial in range(150):
        a, b, groups = _simulated_arms(rng, 3, 1.0, 0.5)
        result = arm_difference(a, b, groups, resamples=300, seed=trial)
        covered_t.append(result["ci95"][0] <= 0.5 <= result["ci95"][1])
        half = 1.96 * result["se"]
        covered_normal.append(result["estimate"] - half <= 0.5 <= result["estimate"] + half)
    assert np.mean(covered_normal) <= 0.92 and np.mean(covered_t) >= 0.93


def test_the_seed_spread_widens_the_interval_and_one_seed_is_marked():
    rng = np.random.default_rng(1)
    narrow = arm_difference(*_simulated_arms(rng, 3, 0.0, 0.5), seed=0)
    wide = arm_difference(*_simulated_arms(rng, 3, 2.0, 0.5), seed=0)
    assert np.diff(wide["ci95"])[0] > 3 * np.diff(narrow["ci95"])[0]
    single = arm_difference(*_simulated_arms(rng, 1, 0.3, 0.5), seed=0)
    assert single["n_seeds"] == [1, 1] and not single["seed_spread_known"] and narrow["seed_spread_known"]


def test_a_ratio_of_sums_and_a_relative_difference():
    # IoU-like: intersections over unions, 2 classes; arm B has every intersection halved
    union = np.full((2, 50, 2), 10.0)
    inter = np.full((2, 50, 2), 8.0)
    a, b = PerImage(inter, union), PerImage(inter / 2, union)
    result = arm_difference(a, b, np.arange(50), resamples=200)
    assert result["estimate"] == pytest.approx(-0.4)
    relative = arm_difference(a, b, np.arange(50), relative=True, resamples=200)
    assert relative["estimate"] == pytest.approx(-0.5) and relative["n_images"] == 50


def test_run_level_scores_with_their_own_sampling_error():
    clear = run_difference([10.0, 11.0, 10.5], [0.2] * 3, [5.0, 5.5, 5.2], [0.2] * 3)
    assert clear["ci95"][1] < 0 and clear["estimate"] == pytest.approx(5.2333 - 10.5, abs=1e-3)
    noisy = run_difference([10.0, 4.0, 7.0], [0.2] * 3, [5.0, 9.0, 6.0], [0.2] * 3)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1]
