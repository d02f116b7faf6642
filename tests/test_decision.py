"""The decision rule on constructed measurements, and the analysis on real (tiny) runs."""

import json

import pandas as pd
import pytest

from imginav_core import load_config
from imginav_core.analysis.decision import Thresholds, decide, write_decision
from imginav_core.analysis.study import AnalysisSettings, run_study
from imginav_core.analysis.runs import RunSummary, load_run, load_runs
from imginav_core.errors import UnfinishedRunError
from imginav_core.outputs import Outputs
from imginav_core.training.metrics_csv import write_metrics

from helpers import PHASE, V1, V1_NAME, V2, V2_NAME, small_config


def _run(config, epochs=10, resolution=512):
    cfg = load_config(config, {"data.resolution": resolution})
    metrics = pd.DataFrame({"epoch": range(1, epochs + 1), "is_best": [1] * epochs, "status": ["completed"] * epochs})
    return RunSummary(cfg.name, cfg.outputs, cfg, metrics, "completed", "")


def _model(mse=0.001, ssim=0.95, sharp=0.9, path=1.2, noise=2.0, kld=None, collapsed=False):
    model = {"reconstruction": {"all": {"mse": mse, "ssim": ssim, "sharpness_ratio": sharp}},
             "interpolation": {"linear": {"mean_path_length_ratio": path}},
             "noise": {"sigmas": [0.0, 0.5, 1.0], "relative_to_clean": [1.0, noise, 2 * noise]}}
    if kld is not None:
        model["posterior"] = {"kld_weighted": kld, "collapsed": collapsed, "active_units": 2 if collapsed else 16,
                              "channels": 16}
    return model


def _metrics(v1, v2):
    return {"models": {V1_NAME: v1, V2_NAME: v2}}


RUNS = [_run(V1), _run(V2)]


def test_the_vae_wins_when_smoother_without_losing_quality():
    d = decide(_metrics(_model(), _model(mse=0.0011, path=1.05, noise=1.5, kld=2e-4)), RUNS, train_images=22000)
    assert d["choice"] == "variational" and d["chosen_experiment"] == V2_NAME
    assert d["criteria"]["interpolation_smoothness"]["verdict"] == "pass"
    assert d["data_sufficient"] and "provisional" not in d["summary"] and d["flags"] == []


def test_similar_quality_and_no_smoothness_gain_prefers_the_deterministic_encoder():
    d = decide(_metrics(_model(), _model(kld=2e-4)), RUNS, train_images=22000)
    assert d["choice"] == "deterministic" and "not measurably smoother" in d["reason"]


def test_a_smoother_but_blurrier_vae_loses():
    d = decide(_metrics(_model(), _model(sharp=0.7, path=1.0, noise=1.0, kld=2e-4)), RUNS, train_images=22000)
    assert d["choice"] == "deterministic" and d["criteria"]["sharpness"]["verdict"] == "fail"
    d = decide(_metrics(_model(), _model(mse=0.002, path=1.0, noise=1.0, kld=2e-4)), RUNS, train_images=22000)
    assert d["choice"] == "deterministic" and d["criteria"]["reconstruction_mse"]["verdict"] == "fail"


def test_collapse_and_a_kld_outside_the_band_are_flagged():
    d = decide(_metrics(_model(), _model(path=1.0, noise=1.0, kld=5e-6, collapsed=True)), RUNS, train_images=22000)
    assert d["choice"] == "deterministic" and "collapse" in d["reason"]
    assert any("outside the band" in f for f in d["flags"]) and any("collapse" in f for f in d["flags"])
    assert d["criteria"]["kld_band"]["verdict"] == "flag"


def test_thresholds_are_parameters():
    measured = _metrics(_model(), _model(mse=0.0013, path=1.05, noise=1.5, kld=2e-4))
    assert decide(measured, RUNS, 22000)["choice"] == "deterministic"  # 30 % more MSE > 25 %
    assert decide(measured, RUNS, 22000, Thresholds(max_mse_increase=0.5))["choice"] == "variational"


def test_too_little_data_is_said_plainly():
    runs = [_run(V1, epochs=2, resolution=64), _run(V2, epochs=2, resolution=64)]
    d = decide(_metrics(_model(), _model(kld=2e-4)), runs, train_images=300)
    assert not d["data_sufficient"] and len(d["data_limits"]) == 3
    assert "too little to decide" in d["summary"]


def test_decision_files_and_a_loadable_phase1_3_config(tmp_path):
    for measured, variational in ((_metrics(_model(), _model(path=1.0, noise=1.0, kld=2e-4)), True),
                                  (_metrics(_model(), _model(kld=2e-4)), False)):
        d = decide(measured, RUNS, 22000)
        decision_path, config_path = write_decision(d, RUNS, Outputs(tmp_path, PHASE))
        assert (decision_path, config_path) == (tmp_path / PHASE / "decision.json", tmp_path / PHASE / "phase1_3_base.yaml")
        assert json.loads(decision_path.read_text())["choice"] == d["choice"]
        cfg = load_config(config_path)
        assert cfg.model.variational is variational and cfg.name == "phase1_3_base"
        assert cfg.loss.kld == (1e-4 if variational else 0.0)
        assert (cfg.model.latent_channels, cfg.model.base_channels, cfg.model.downsampling_steps) == (16, 32, 4)


def test_the_study_is_deterministic_and_measures_both_models_alike(tiny_runs):
    runs, _ = load_runs(Outputs(tiny_runs, PHASE), [V1_NAME, V2_NAME])
    settings = AnalysisSettings(max_images=12, device="cpu", pairs_per_kind=1, steps=5)
    study = run_study(runs, tiny_runs, settings, log=lambda _: None)
    first = study.to_json()
    path = tiny_runs / PHASE / "analysis" / "latent_metrics.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(first))
    second = run_study(runs, tiny_runs, settings, log=lambda _: None).to_json()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    v1, v2 = (first["models"][r.name] for r in runs)
    for model in (v1, v2):  # latent noise at the largest sigma makes the reconstructions worse
        assert model["noise"]["relative_to_clean"][-1] > 1.0, model["noise"]
    # one pair of each kind the measured layouts allow: room-room, scene-scene, room-scene
    types = study.data.val.types[study.positions]
    rooms, scenes = int((types == 0).sum()), int((types == 1).sum())
    possible = (rooms >= 2) + (scenes >= 2) + (rooms >= 1 and scenes >= 1)
    assert possible >= 1 and len(v1["interpolation"]["linear"]["pairs"]) == len(first["pairs"]) == possible
    assert v1["reconstruction"]["all"]["images"] == min(12, len(study.data.val)) == first["validation_images"]


def test_an_unfinished_run_is_refused_or_marked(tiny_runs, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_runs, root)
    cfg = small_config(V2, root, **{"training.epochs": 5})
    run = load_run(Outputs(root, PHASE), cfg.name)
    # as after a job killed by its wall-time limit: 2 of 5 epochs, last row still "running"
    history = run.metrics.to_dict("records")
    history[-1]["status"] = "running"
    write_metrics(cfg, history)
    with pytest.raises(UnfinishedRunError, match=r"phase1_2_AE_V2_vae_light: stopped after 2 of 2 epochs"):
        load_runs(Outputs(root, PHASE), [V1_NAME, cfg.name])
    runs, warnings = load_runs(Outputs(root, PHASE), [V1_NAME, cfg.name], allow_unfinished=True)
    assert len(warnings) == 1 and not runs[1].finished
    (root / "experiments" / V1_NAME / "best.pt").unlink()
    with pytest.raises(UnfinishedRunError, match="best.pt is missing"):
        load_runs(Outputs(root, PHASE), [V1_NAME])
