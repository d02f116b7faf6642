"""The intervals the decision rests on, on synthetic data whose truth is known: each simulation
draws many studies at once (numpy, vectorised, through the same functions the decision calls) and
counts how often the interval holds the truth, or sees an effect."""

import math

import numpy as np
import pytest
from scipy import stats as distributions

from imginav_core.study.analysis.criteria import Rule, planned_primary_effect
from imginav_core.study.power import detectable_effect, interval_power, planned_detectable_effect, power, seeds_needed
from imginav_core.study.stats import (
    PerImage,
    arm_difference,
    arm_intervals,
    cluster_weights,
    primary_difference,
    primary_intervals,
    run_difference,
)

# each arm's seed-to-seed sd: equal, one arm 5 x and 20 x the other's
SPREADS = {"equal": (1.0, 1.0), "5x": (1.0, 0.2), "20x": (1.0, 0.05)}


def test_a_scene_is_resampled_whole_before_its_rooms():
    groups = np.array([0, 0, 0, 0, 1])  # one scene of four layouts, one of one
    weights = cluster_weights(groups, 2000, np.random.default_rng(0))
    assert np.all(weights.sum(1)[weights[:, 4] == 0] == 8)  # scene 0 drawn twice: 8 layouts
    # a resample with the single layout drawn twice holds none of scene 0
    assert np.all(weights[weights[:, 4] == 2][:, :4] == 0)
    assert np.allclose(weights.mean(0), 1.0, atol=0.08)
    # within a drawn scene its layouts are drawn with replacement: some resamples repeat one
    assert np.any(weights[:, :4].max(1) > 2)


# ---- the primary: each run's log FLD under each scorer network ------------------------------------


def _primary_studies(rng, trials, seeds, spreads, tau, *, effect=0.0, residual=0.05, scorers=3):
    """Log FLD (trials, seeds, K) of two arms: a scorer network's own scale (shared, cancels), the
    arm-by-scorer interaction (one network's log ratio scatters by ``tau``), each run's offset of
    its arm's spread and a run-by-network wobble; arm B lower by ``effect`` (V2 / V1 = exp(-effect))."""
    scale = rng.normal(0, 0.6, (trials, 1, scorers))  # FLD differs 2.7-3.1 x across networks
    interaction = rng.normal(0, tau / math.sqrt(2), (trials, 2, scorers))

    def arm(i, sd, level):
        runs = rng.normal(0, sd, (trials, seeds, 1)) + rng.normal(0, residual, (trials, seeds, scorers))
        return level + scale + interaction[:, i : i + 1] + runs

    return arm(0, spreads[0], 0.0), arm(1, spreads[1], -effect)


@pytest.mark.parametrize("seeds", [2, 3, 5])
@pytest.mark.parametrize("spreads", SPREADS, ids=list(SPREADS))
def test_the_primary_covers_the_ratio_over_scorer_networks(seeds, spreads):
    """The estimand is the ratio over scorer networks, not these three: each study draws its
    networks, and the interval must hold the arms' true ratio (1). With the arm-by-scorer variance
    (one network's log ratio scattering by 0.2) the intervals cover 0.94-0.98; without it they
    covered 0.77-0.96 (the runs' spread cannot see how the networks would differ)."""
    sd = 0.15 * np.array(SPREADS[spreads])  # a run's log FLD: 0.10-0.19 in the demo
    a, b = _primary_studies(np.random.default_rng(seeds), 4000, seeds, sd, tau=0.2)
    found = primary_intervals(a, b)
    covered = np.mean((found["low"] <= 0) & (0 <= found["high"]))
    # nominal 95 %; 4000 studies give a binomial standard error of 0.35 points; at 2 seeds Welch's
    # df (1 to 2) is conservative for equal spreads, as the run-level interval's always was
    assert 0.93 <= covered <= (0.98 if seeds == 2 else 0.975), covered
    without = primary_intervals(a, b, scorer_variance=False)
    assert np.mean((without["low"] <= 0) & (0 <= without["high"])) < covered


@pytest.mark.parametrize("seeds", [2, 3, 5])
@pytest.mark.parametrize("spreads", SPREADS, ids=list(SPREADS))
def test_run_level_intervals_cover_the_truth_when_one_arm_scatters_more(seeds, spreads):
    """One scorer network (no networks' part): the runs' Welch interval. With a t on 2 (S - 1) df
    these covered 0.87 (2 seeds), 0.90 (3) and 0.92 (5) when one arm's seeds scatter 20 x more."""
    a, b = _primary_studies(np.random.default_rng(20 + seeds), 4000, seeds, SPREADS[spreads], 0.0, scorers=1)
    found = primary_intervals(a, b)
    assert np.mean((found["low"] <= 0) & (0 <= found["high"])) >= 0.93


def test_run_difference_is_the_primarys_interval_under_one_network():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 0.2, (3, 1)), rng.normal(-0.3, 0.1, (4, 1))
    runs = run_difference(a[:, 0], np.zeros(3), b[:, 0], np.zeros(4), log=True)
    primary = primary_difference(a, b)
    assert runs["ci95"] == pytest.approx(primary["ci95"]) and runs["df"] == pytest.approx(primary["df"])
    assert primary["variance_parts"]["scorer_networks"] == 0 and primary["ratio"] == pytest.approx(
        1 + primary["estimate"]
    )


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_detectable_effect_reported_is_seen_as_often_as_it_says(seeds):
    """After the data: the decision states the ratio its design would see 80 % of the time, at the
    observed pooled spread of the runs and the observed arm-by-scorer spread. Studies drawn with
    those spreads and that true ratio see it (the interval wholly below 1) 0.80 +- 0.05 of the time.
    The plug-in (t_0.975 + t_0.80) x the observed standard error, on the observed df, was seen 0.42,
    0.67 and 0.75 of the time at 2, 3 and 5 seeds."""
    for observed in range(3):
        a, b = _primary_studies(np.random.default_rng(100 + observed), 1, seeds, (0.15, 0.15), 0.07, residual=0.0)
        found = primary_difference(a[0], b[0])
        seen = found["detectable"]
        assert seen["at_most"] == pytest.approx(1 / seen["at_least"]) and seen["power"] == 0.8
        assert seen["at_most"] == pytest.approx(math.exp(-seen["effect"]))
        spread, tau = found["pooled_log_spread"], found["arm_scorer_spread"]
        a, b = _primary_studies(
            np.random.default_rng(7), 8000, seeds, (spread, spread), tau, effect=seen["effect"], residual=0.0
        )
        assert np.mean(primary_intervals(a, b)["high"] < 0) == pytest.approx(0.80, abs=0.05)


def test_the_plans_detectable_effect_both_ways_before_the_data():
    """The plan's figure: the ratio seen 80 % of the time with the planned seeds per arm and the
    assumed spreads (named defaults), as plain data the protocol can record."""
    five = planned_primary_effect(5)
    assert five["log_seed_spread"] == 0.19 and "demo" in five["log_seed_spread_source"]
    assert five["ratio_at_most"] == pytest.approx(1 / five["ratio_at_least"])
    assert five["text"].startswith("with 5 runs per arm, V2's FLD would have to be at most 0.66 x or at least 1.51 x")
    three = planned_primary_effect(3)
    assert three["ratio_at_most"] < five["ratio_at_most"] < 1  # fewer seeds: a larger effect needed
    # it is the power of the decision's interval: studies drawn at the plan's assumptions see it 80 %
    a, b = _primary_studies(
        np.random.default_rng(9), 8000, 5, (0.19, 0.19), 0.07, effect=five["log_effect"], residual=0
    )
    assert np.mean(primary_intervals(a, b)["high"] < 0) == pytest.approx(0.80, abs=0.03)
    assert planned_primary_effect(5, rule=Rule(power=0.9))["ratio_at_most"] < five["ratio_at_most"]
    with pytest.raises(ValueError, match="at least 2 runs per arm"):
        planned_primary_effect(1)


# ---- per-image criteria: the item noise counted once ------------------------------------------------

IMAGES, SCENES = 40, 10
IMAGE_GROUPS = np.repeat(np.arange(SCENES), IMAGES // SCENES)


def _image_studies(rng, trials, seeds, spreads, *, difference=0.5, interaction=0.2, wobble=0.5, log=False):
    """Per-image values of two arms on the same images: a shared scene and image effect (what
    pairing cancels), an arm-by-image interaction (which layouts B does better: the items' own
    part, mean 0), each run's offset of its arm's seed spread and a run-by-image wobble (the item
    noise each run's value already holds). ``log``: the values are exp of that (an MSE)."""
    shared = rng.normal(0, 1, (trials, SCENES))[:, IMAGE_GROUPS] + rng.normal(0, 1, (trials, IMAGES))
    inter = rng.normal(0, interaction, (trials, SCENES))[:, IMAGE_GROUPS] + rng.normal(0, interaction, (trials, IMAGES))

    def arm(offset, sd, h):
        runs = rng.normal(0, sd, (trials, seeds, 1)) + rng.normal(0, wobble, (trials, seeds, IMAGES))
        values = offset + shared[:, None] + h[:, None] + runs
        return np.exp(values - 7) if log else values

    return arm(0.0, spreads[0], -inter / 2), arm(difference, spreads[1], inter / 2)


def _arm_intervals(a, b, *, log=False, resamples=200):
    """``arm_difference``'s interval of every study at once: the same resamples of the images."""
    weights = cluster_weights(IMAGE_GROUPS, resamples, np.random.default_rng(0))

    def rows(x):
        return np.einsum("bn,tsn->tbs", weights, x) / weights.sum(1)[None, :, None]

    return arm_intervals(a.mean(-1), b.mean(-1), rows(a), rows(b), log=log, scenes=SCENES)


@pytest.mark.parametrize("seeds", [2, 3, 5])
@pytest.mark.parametrize("spreads", SPREADS, ids=list(SPREADS))
def test_per_image_intervals_count_the_item_noise_once(seeds, spreads):
    """Each run's value holds its own item noise, and the items' resamples held it again: the
    intervals covered 0.97-1.00 (here, the item noise about a quarter of the seeds' spread). Counted
    once they cover 0.95-0.97 at 3 and 5 seeds, 0.97-0.98 at 2 (Welch's df, 1 to 2, is conservative
    for equal spreads there, as the primary's interval is)."""
    sd = 0.3 * np.array(SPREADS[spreads])  # each run's mean wobble: 0.5 / sqrt(40) = 0.08
    a, b = _image_studies(np.random.default_rng(10 + seeds), 2000, seeds, sd)
    found = _arm_intervals(a, b)
    covered = np.mean((found["low"] <= 0.5) & (0.5 <= found["high"]))
    # nominal 95 %; 2000 studies give a binomial standard error of 0.5 points
    assert 0.93 <= covered <= (0.99 if seeds == 2 else 0.975), covered
    # the same intervals with the item noise counted twice, as before
    twice = np.sqrt(found["seed_a"] + found["seed_b"] + found["items"] + found["wobble"])
    twice = distributions.t.ppf(0.975, np.where(np.isfinite(found["df"]), found["df"], 1e9)) * twice
    assert np.mean(np.abs(found["estimate"] - 0.5) <= twice) > covered


@pytest.mark.parametrize("spreads", SPREADS, ids=list(SPREADS))
def test_non_inferiority_can_pass_at_equal_truth(spreads):
    """The MSE's margin (25 %, on the log ratio) at equal truth, 5 seeds per arm: each run's log MSE
    scattering by 0.10 between seeds (the other arm 5 x or 20 x less), the run-by-layout wobble 0.3,
    40 layouts in 10 groups.
    Non-inferiority is shown in 52 % (equal), 62 % (5 x) and 62 % (20 x) of the studies; with the
    item noise counted twice, in 29, 37 and 37 %. The intervals cover 0.95-0.96."""
    sd = 0.1 * np.array(SPREADS[spreads])
    a, b = _image_studies(np.random.default_rng(30), 2000, 5, sd, difference=0.0, interaction=0.1, wobble=0.3, log=True)
    found = _arm_intervals(a, b, log=True)
    shown = np.mean(found["high"] <= math.log1p(Rule().mse_margin))
    assert shown == pytest.approx({"equal": 0.52, "5x": 0.62, "20x": 0.62}[spreads], abs=0.02)
    twice = np.sqrt(found["seed_a"] + found["seed_b"] + found["items"] + found["wobble"])
    twice = distributions.t.ppf(0.975, np.where(np.isfinite(found["df"]), found["df"], 1e9)) * twice
    assert np.mean(found["estimate"] + twice <= math.log1p(Rule().mse_margin)) < shown - 0.2
    assert 0.93 <= np.mean((found["low"] <= 0) & (0 <= found["high"])) <= 0.975


def test_the_seed_spread_widens_the_interval_and_one_seed_is_marked():
    rng = np.random.default_rng(1)

    def one(seeds, spread):
        a, b = _image_studies(rng, 1, seeds, (spread, spread))
        return arm_difference(PerImage.mean_of(a[0]), PerImage.mean_of(b[0]), IMAGE_GROUPS, seed=0)

    narrow, wide = one(3, 0.0), one(3, 2.0)
    assert np.diff(wide["ci95"])[0] > 3 * np.diff(narrow["ci95"])[0]
    single = one(1, 0.3)
    assert single["n_seeds"] == [1, 1] and not single["seed_spread_known"] and narrow["seed_spread_known"]
    # the parts the interval is made of, the item noise taken out of the items' part
    assert set(narrow["variance_parts"]) == {"seeds_a", "seeds_b", "items"}
    assert narrow["detectable"]["scale"] == "difference V2 - V1"
    assert narrow["detectable"]["at_most"] == pytest.approx(-narrow["detectable"]["at_least"])


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
    assert result["detectable"]["scale"] == "ratio V2 / V1"
    assert result["detectable"]["at_most"] == pytest.approx(1 / result["detectable"]["at_least"])


def test_a_ratio_is_always_on_the_log_scale_and_a_run_not_above_zero_is_named():
    """No absolute fallback: a ratio to small values is still a ratio (whether a criterion can be
    assessed at all is the decision's to say, by its rule), and a run whose value is not above zero
    is an error naming it (an MSE of 0 is a measurement gone wrong)."""
    a = PerImage.mean_of(np.array([[0.003], [0.0006]]) * np.ones((2, 30)))
    b = PerImage.mean_of(np.array([[0.036], [0.035]]) * np.ones((2, 30)))
    result = arm_difference(a, b, np.arange(30), relative=True, resamples=200, names=("V1", "V2"))
    assert result["relative"] is True and "note" not in result
    assert result["estimate"] == pytest.approx(0.0355 / 0.0018 - 1)
    zero = PerImage.mean_of(np.array([[0.0], [0.001]]) * np.ones((2, 30)))
    with pytest.raises(ValueError, match=r"^V1_seed42: reconstruction mse is 0; a ratio .* above zero"):
        arm_difference(
            zero, b, np.arange(30), relative=True, resamples=200, names=("V1", "V2"),
            runs=(["V1_seed42", "V1_seed43"], ["V2_seed42", "V2_seed43"]), what="reconstruction mse",
        )  # fmt: skip


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


def _found(effect, seeds, studies=4000, seed=5):
    """How often the runs' interval (one scorer network: ``run_difference``'s) excludes zero for a
    true difference ``effect`` between arms whose runs scatter with standard deviation 1."""
    a, b = _primary_studies(np.random.default_rng(seed), studies, seeds, (1.0, 1.0), 0.0, residual=0.0, scorers=1)
    found = primary_intervals(a, b + effect)
    return np.mean((found["low"] > 0) | (found["high"] < 0))


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_planned_power_is_that_of_the_interval(seeds):
    """The plan's power is the interval's: at the effect the plan says is found 80 % of the time,
    the simulated studies find it about that often; 3 seeds need about 3.5 seed standard
    deviations (not the 3 of a t on 2 (S - 1) df: Welch's df vary from study to study)."""
    effect = planned_detectable_effect(1.0, seeds)
    assert power(effect, 1.0, seeds) == pytest.approx(0.8, abs=1e-3)
    assert _found(effect, seeds) == pytest.approx(0.8, abs=0.025)
    assert power(2.0, 1.0, seeds) == pytest.approx(_found(2.0, seeds, seed=6), abs=0.025)
    # the general form (any variance parts) agrees with the two-arm one
    parts = [(1 / seeds, seeds - 1)] * 2
    assert detectable_effect(parts) == pytest.approx(effect, rel=0.01)
    assert interval_power(effect, parts) == pytest.approx(0.8, abs=0.005)


def test_the_detectable_effect_of_a_measured_difference():
    """With every interval, the true difference the same design would see 80 % of the time at the
    variances found, both ways: integrated over the variance estimates, larger than the plug-in
    (t_0.975 + t_0.80) x se, which at 3 seeds is seen far less often than 80 %."""
    result = run_difference([10.0, 11.0, 10.5], [0.2] * 3, [5.0, 6.5, 5.2], [0.2] * 3)
    seen = result["detectable"]
    assert seen["at_least"] == pytest.approx(-seen["at_most"]) == pytest.approx(seen["effect"])
    plug_in = distributions.t.ppf([0.975, 0.8], result["df"]).sum() * result["se"]
    assert seen["effect"] > plug_in
    parts = [(np.var([10.0, 11.0, 10.5], ddof=1) / 3, 2), (np.var([5.0, 6.5, 5.2], ddof=1) / 3, 2)]
    assert interval_power(seen["effect"], parts) == pytest.approx(0.8, abs=0.002)
    assert interval_power(plug_in, parts) < 0.75
    assert 2 <= result["df"] <= 4  # Welch: between one arm's S - 1 and both arms' 2 (S - 1)
    # the same spread measured on more seeds: a smaller detectable effect
    wider = run_difference([10.0, 11.0, 10.5] * 2, [0.2] * 6, [5.0, 6.5, 5.2] * 2, [0.2] * 6)
    assert wider["detectable"]["effect"] < seen["effect"] / 1.5


def test_power_and_the_seeds_a_difference_needs():
    # 3 seeds find 2 seed standard deviations about a third of the time, 5 about three quarters
    assert power(2.0, 1.0, 3) < 0.4 < 0.75 < power(2.0, 1.0, 5) < 0.8
    assert seeds_needed(2.0, 1.0) == 6 and seeds_needed(3.6, 1.0) == 3 and seeds_needed(0.01, 1.0, most=10) is None
    assert power(4.0, 2.0, 5) == power(2.0, 1.0, 5) == power(-2.0, 1.0, 5)  # only |effect| in spreads matters
    assert [power(2.0, 1.0, s) for s in range(2, 9)] == sorted(power(2.0, 1.0, s) for s in range(2, 9))
    with pytest.raises(ValueError, match="at least 2 runs"):
        power(1.0, 1.0, 1)
