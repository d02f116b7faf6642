"""The KL-weight curve and its recommendation, on constructed runs whose answer is known: each
weight's values and intervals over its runs, 0 (the deterministic encoder) drawn apart from the
log axis, the recommendation (the lowest FLD among the weights whose reconstruction is non-inferior
to V1's) not fooled by a lower FLD bought with a worse reconstruction, and never the decision."""

import dataclasses
import json
import math

import matplotlib
import numpy as np
import pytest
from helpers import PHASE, ROOT, V1_NAME, V2_NAME
from scipy import stats
from test_decision import CLEAR_WIN, SEEDS, _decide, _probe, _probe_metrics, _runs, assert_same_record

from imginav_core import load_config
from imginav_core.outputs import Outputs
from imginav_core.study.analysis import kl_plots
from imginav_core.study.analysis.criteria import Rule
from imginav_core.study.analysis.decision import write_decision
from imginav_core.study.analysis.study import AnalysisSettings, run_study
from imginav_core.study.analysis.sweep import KLSweep, SweepRun, kl_curve, measure_run, recommend
from imginav_core.study.arms import is_sweep_run
from imginav_core.study.plan import SweepPoint
from imginav_core.study.probe import plots as probe_plots
from imginav_core.study.runs import load_runs
from imginav_core.study.stats import seed_estimate

matplotlib.use("Agg")

IMAGES, GROUPS = 60, 20
RULE = Rule(resamples=400)


def _runs_at(kld, flds, mse=0.010, iou=0.6, arm="V2", kl=None, seed_spread=0.0):
    """Runs of one weight, one per FLD: per-image MSE around ``mse`` (a per-run offset of
    ``seed_spread``), the small classes' IoU ``iou``; KL and active share for a VAE."""
    rng = np.random.default_rng(int(kld * 1e6) + len(flds))
    runs = []
    for i, fld in enumerate(flds):
        level = mse * (1 + seed_spread * (i - (len(flds) - 1) / 2))
        runs.append(
            SweepRun(
                f"{arm}_kld{kld:g}_seed{i}",
                kld,
                i,
                kld > 0,
                np.clip(level * (1 + 0.05 * rng.normal(size=IMAGES)), 1e-9, None),
                np.full((IMAGES, 3), iou * 100.0),
                np.full((IMAGES, 3), 100.0),
                None if kld == 0 else (kl or 1.0) * (1 + 0.01 * i),
                None if kld == 0 else 0.5,
                math.log(fld),
                0.05,
            )
        )
    return runs


def _curve(points):
    """``points``: (weight, arm, comparison, runs); V1's runs are the weight-0 point's."""
    groups = np.repeat(np.arange(GROUPS), IMAGES // GROUPS)
    reference = next(runs for kld, *_, runs in points if kld == 0)
    built = [(SweepPoint(kld, arm, [r.name for r in runs], comparison), runs) for kld, arm, comparison, runs in points]
    return kl_curve(built, reference, groups, RULE)


def _study_like(seeds=3):
    """Four weights: V1 at 0, the sweep's 1e-5 with a clearly lower FLD than V1's and as good a
    reconstruction, V2 at 1e-4 whose FLD scatters too much to be told from 1e-5's, and 1e-3 with
    the lowest FLD of all bought with twice the MSE (beyond the 25 % margin)."""
    pick = (lambda values: values[:seeds]) if seeds > 1 else (lambda values: values[:1])
    return [
        (0.0, "V1", True, _runs_at(0.0, pick([40.0, 41.0, 39.0]), arm="V1")),
        (1e-5, "V2", False, _runs_at(1e-5, pick([30.0, 31.0, 29.0]), kl=3.0)),
        (1e-4, "V2", True, _runs_at(1e-4, pick([30.0, 40.0, 24.0]), kl=1.5)),
        (1e-3, "V2", False, _runs_at(1e-3, pick([20.0, 21.0, 19.0]), mse=0.020, kl=0.4)),
    ]


def test_each_weight_is_the_mean_over_its_runs_with_a_t_interval_over_them():
    curve = _curve(_study_like())
    assert [p.kld for p in curve] == [0.0, 1e-5, 1e-4, 1e-3]
    point = curve[2]  # V2's runs: FLD 30, 40, 24
    logs = np.log([30.0, 40.0, 24.0])
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    assert point.fld.estimate == pytest.approx(math.exp(logs.mean()))  # the geometric mean
    assert point.fld.ci95 == pytest.approx([math.exp(logs.mean() - half), math.exp(logs.mean() + half)])
    mse = [r.mse.mean() for r in point.runs]
    half = stats.t.ppf(0.975, 2) * np.std(mse, ddof=1) / math.sqrt(3)
    assert point.mse.ci95 == pytest.approx([np.mean(mse) - half, np.mean(mse) + half])
    assert point.small_class_iou.estimate == pytest.approx(0.6)
    assert point.kl_nats_per_element.estimate == pytest.approx(1.5 * 1.01)
    # the deterministic encoder has no KL or active units, and is the reference, not compared with itself
    assert curve[0].kl_nats_per_element.estimate is None and curve[0].non_inferiority == {}
    assert curve[0].label == "0 (V1)" and curve[2].label == "1e-4 (V2)" and curve[1].label == "1e-5"
    # reconstruction against V1 as the decision judges it: as good is non-inferior, twice the MSE inferior
    assert {c["verdict"] for c in curve[1].non_inferiority.values()} == {"non-inferior"}
    assert curve[3].non_inferiority["reconstruction_mse"]["verdict"] == "inferior"
    assert curve[3].non_inferiority["reconstruction_mse"]["estimate"] == pytest.approx(1.0, abs=0.05)  # +100 %


def test_one_run_per_weight_has_no_interval_and_says_so():
    assert seed_estimate([3.0]).ci95 is None and seed_estimate([3.0]).estimate == 3.0
    curve = _curve(_study_like(seeds=1))
    assert all(p.fld.ci95 is None and p.mse.ci95 is None for p in curve)
    # the seed-to-seed spread unknown: no weight is shown non-inferior, however close
    assert all(c["verdict"] == "inconclusive" for p in curve[1:] for c in p.non_inferiority.values())
    recommendation = recommend(curve, RULE)
    assert recommendation.kld == 0.0  # V1, the reference: nothing else could be shown non-inferior
    assert recommendation.neighbours[0].distinguishable is None and "cannot tell" in recommendation.text
    # the point estimates' reading, apart and said to be provisional: 1e-5 (1e-3's MSE is beyond the margin)
    assert "at KL weight 1e-5" in recommendation.provisional and "provisional" in recommendation.provisional
    assert "no interval" in recommendation.text


def test_the_recommendation_is_the_lowest_fld_among_weights_non_inferior_to_v1():
    curve = _curve(_study_like())
    recommendation = recommend(curve, RULE)
    # not 1e-3, whose FLD is the lowest but whose reconstruction is worse beyond the margin
    assert recommendation.kld == 1e-5 and recommendation.candidates == ["0 (V1)", "1e-5", "1e-4 (V2)"]
    assert "1e-5" not in recommendation.excluded and "reconstruction_mse inferior" in recommendation.excluded["1e-3"]
    assert recommendation.fld.estimate == pytest.approx(math.exp(np.log([30.0, 31.0, 29.0]).mean()))
    assert recommendation.fld.ci95 is not None and not recommendation.provisional
    left, right = recommendation.neighbours
    assert (left.kld, left.distinguishable) == (0.0, True)  # V1's FLD about a third higher, in every run
    assert left.ratio["ci95"][0] > 0 and left.ratio["estimate"] == pytest.approx(40 / 30 - 1, abs=0.01)
    assert (right.kld, right.distinguishable) == (1e-4, False)  # V2's runs scatter too much to tell
    assert "distinguishable" in recommendation.text and "does not change" in recommendation.text


def test_a_weight_whose_generations_the_guard_flags_is_not_recommended():
    """1e-5 would be recommended, but one of its runs' generations score better than its own test
    reconstructions (the guard, the decision's rule): it is left out, said why, and the next lowest
    FLD among the non-inferior weights is recommended."""
    points = _study_like()
    points[1][3][0].guard = ["V2_kld1e-05_seed0: generator collapsed or scorer fooled: its generations' FLD is 0.30 x"]
    recommendation = recommend(_curve(points), RULE)
    assert recommendation.kld == 1e-4 and "1e-5" not in recommendation.candidates
    assert recommendation.excluded["1e-5"].startswith("generations flagged by the guard (V2_kld1e-05_seed0: generator")


def test_the_reconstruction_margins_are_the_decisions_relative_ones():
    """The small-class IoU is judged relative to V1's (10 %) and not at all below V1's 0.05: a weight
    with IoU 0.55 against V1's 0.6 (-8 %) is non-inferior; with V1 at 0.01 no weight can be shown
    non-inferior on it (not assessable), whatever its own IoU."""
    points = _study_like()
    points[1] = (1e-5, "V2", False, _runs_at(1e-5, [30.0, 31.0, 29.0], kl=3.0, iou=0.55))
    assert _curve(points)[1].non_inferiority["small_class_iou"]["verdict"] == "non-inferior"
    faint = [
        (kld, arm, comparison, [dataclasses.replace(r, small_inter=r.small_inter / 60) for r in runs])
        for kld, arm, comparison, runs in points
    ]
    curve = _curve(faint)
    assert all(p.non_inferiority["small_class_iou"]["verdict"] == "not assessable" for p in curve[1:])
    recommendation = recommend(curve, RULE)
    assert recommendation.kld == 0.0 and "small_class_iou not assessable" in recommendation.excluded["1e-5"]


def test_the_figure_draws_0_apart_from_the_log_axis_and_marks_v1_and_v2():
    curve = _curve(_study_like())
    sweep = KLSweep(curve, recommend(curve, RULE), [], "FLD", IMAGES)
    x = kl_plots.kl_positions([p.kld for p in curve])
    assert x[1e-5] == pytest.approx(-5) and x[1e-3] == pytest.approx(-3)
    assert x[0.0] < x[1e-5] - 1  # apart: more than a decade left of the smallest weight
    fig = kl_plots.kl_curve(sweep)
    fld = fig.axes[0]
    bars = [c for c in fld.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    centres = sorted(float(b.lines[0].get_xdata()[0]) for b in bars)
    assert centres == pytest.approx(sorted(x.values()))
    joined = [line for line in fld.get_lines() if len(set(line.get_xdata())) > 1]  # not the break's vertical
    assert len(joined) == 1 and list(joined[0].get_xdata()) == pytest.approx([-5, -4, -3])  # 0 is not on the line
    (gap,) = [line for line in fld.get_lines() if line.get_linestyle() == ":"]
    assert x[0.0] < gap.get_xdata()[0] < x[1e-5]
    labels = [t.get_text() for t in fig.axes[4].get_xticklabels()]  # the lowest panel of the left column
    assert labels == ["0\n(V1)", "1e-5", "1e-4\n(V2)", "1e-3"]
    written = json.loads(json.dumps(sweep.to_json()))  # what kl_sweep.json holds
    assert [p["label"] for p in written["curve"]] == ["0 (V1)", "1e-5", "1e-4 (V2)", "1e-3"]
    assert written["curve"][2]["fld"]["ci95"] == pytest.approx(curve[2].fld.ci95)
    assert written["recommendation"]["kld"] == 1e-5 and written["role"].startswith("secondary")
    table = kl_plots.kl_curve_table(sweep)
    assert table.loc["1e-3", "MSE vs V1"] == "inferior" and table.loc["0 (V1)", "MSE vs V1"] == "reference"


@pytest.mark.parametrize("decision_probe,recommended", [(CLEAR_WIN, 0.0), (None, 1e-5)])
def test_the_recommendation_never_replaces_the_decisions_choice(tmp_path, decision_probe, recommended):
    """The decision chooses V2 (a clear win) while the sweep recommends 0, or V1 while it recommends
    1e-5: phase1_3_base.yaml stays the decision's choice, the recommendation a comment in it."""
    decision = _decide(probe=_probe(*decision_probe) if decision_probe else "default")
    before = json.dumps(decision.to_json(), sort_keys=True)
    points = _study_like()
    if recommended == 0.0:  # every VAE weight's FLD lower, its reconstruction five times worse: only V1 qualifies
        points = points[:1] + [(k, a, c, _runs_at(k, [20.0, 21.0, 19.0], mse=0.05)) for k, a, c, _ in points[1:]]
    recommendation = recommend(_curve(points), RULE)
    assert recommendation.kld == recommended
    runs = [run for arm in _runs(SEEDS).values() for run in arm]
    decision_path, config_path = write_decision(decision, runs, Outputs(tmp_path, PHASE), recommendation.comment)
    assert json.dumps(decision.to_json(), sort_keys=True) == before  # the decision record is not touched
    assert json.loads(decision_path.read_text()) == json.loads(before)
    cfg = load_config(config_path)
    chose_vae = decision.choice == "variational"
    assert chose_vae is (decision_probe is not None)
    assert cfg.model.variational is chose_vae and cfg.loss.kld == (1e-4 if chose_vae else 0.0)
    text = config_path.read_text()
    comment = [line for line in text.splitlines() if line.startswith("#")]
    assert comment and "NOT this configuration's choice" in comment[0]
    assert recommendation.text in " ".join(line.removeprefix("# ") for line in comment[1:])  # all of it, as comments


def test_the_light_pass_measures_a_run_as_the_study_does(tiny_runs):
    """A sweep run's reconstruction and posterior, measured by the curve's own pass, equal what
    the study measured of the same run on the same test layouts."""
    runs, _ = load_runs(Outputs(tiny_runs, PHASE), [V1_NAME, V2_NAME])
    settings = AnalysisSettings(max_images=12, device="cpu", pairs_per_kind=1, steps=3, neighbour_pool=8, scorer=False)
    study = run_study({"V1": [runs[0]], "V2": [runs[1]]}, tiny_runs, settings, log=lambda _: None)
    for run, result in zip(runs, study.models):
        light = measure_run(run, study, "cpu")
        assert light.mse == pytest.approx(result.per_image["mse"])
        assert np.array_equal(light.small_inter, result.per_image["small_inter"])
        assert np.array_equal(light.small_union, result.per_image["small_union"])
        posterior = result.metrics.get("posterior")
        assert (light.kl_nats_per_element is None) is (posterior is None)
        if posterior:
            assert light.kl_nats_per_element == pytest.approx(posterior["kl_nats_per_element"])
            assert light.active_share == pytest.approx(posterior["active_share"])


def _probed(label, kld, sweep, fld):
    score = {"value": fld, "floor": 1.0}
    return {
        "label": label,
        "training_seed": 42,
        "kld": kld,
        "sweep": sweep,
        "generated": {"scores": {"fld": score, "precision": score, "recall": score, "palette_purity": score}},
        "reconstructed": {"scores": {"fld": score}},
        "heldout_loss": {"500": 0.1},
    }


def test_the_probes_own_tables_and_headline_numbers_are_of_the_comparison_runs():
    """The sweep's runs are probed alike, but a V2-config run at KL weight 1e-3 is not V2: the
    probe's tables and the introduction's V2 numbers leave it out, and where it is named it says
    its weight."""
    assert is_sweep_run("V2", 1e-3) and not is_sweep_run("V2", 1e-4) and not is_sweep_run("V1", 0.0)
    assert not is_sweep_run("not_an_arm", 1e-3)
    metrics = _probe_metrics(
        {
            "v1": _probed("V1", 0.0, False, 40.0),
            "v2": _probed("V2", 1e-4, False, 30.0),
            "v2_kld0.001": _probed("V2", 1e-3, True, 10.0),
        }
    )
    assert probe_plots._label(metrics, "v2_kld0.001") == "V2 KL 0.001 seed 42"
    shown, swept = probe_plots.comparison_runs(metrics)
    assert swept == ["v2_kld0.001"] and list(shown.experiments) == ["v1", "v2"]
    assert probe_plots.key_numbers(shown)["v2_probe_fld"] == "30"  # not the mean with the sweep run's 10


@pytest.mark.parametrize("seeds", [3, 1])
def test_the_curve_and_recommendation_on_fixed_runs_are_what_they_were(seeds):
    """kl_sweep.json's every key, number and word on fixed runs, against what the code wrote before
    it was shortened (commit e7d4d4f; tests/golden/kl_sweep.json)."""
    curve = _curve(_study_like(seeds))
    found = KLSweep(curve, recommend(curve, RULE), ["x"], "FLD", 60).to_json()
    expected = json.loads((ROOT / "tests" / "golden" / "kl_sweep.json").read_text())[{3: "three", 1: "one"}[seeds]]
    assert_same_record(json.loads(json.dumps(found)), expected, f"{seeds} seeds")
