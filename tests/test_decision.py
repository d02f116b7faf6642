"""The decision rule on constructed measurements whose answer is known, and the analysis on real
(tiny) runs."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import PHASE, V1, V1_NAME, V2, V2_NAME, small_config

from imginav_core import load_config
from imginav_core.analysis.decision import Rule, decide, recipe_flags, write_decision
from imginav_core.analysis.runs import RunSummary, load_run, load_runs
from imginav_core.analysis.study import AnalysisSettings, ModelResult, Pair, Study, run_study
from imginav_core.errors import UnfinishedRunError
from imginav_core.outputs import Outputs
from imginav_core.training.metrics_csv import write_metrics

IMAGES, SCENES, PAIRS = 240, 60, 6


def _run(config, seed, epochs=10, resolution=512, root="outputs"):
    cfg = load_config(
        config,
        {
            "data.resolution": resolution,
            "training.seed": seed,
            "output_root": str(root),
            "name": f"{load_config(config).name}_seed{seed}",
        },
    )
    metrics = pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "is_best": [1] * epochs,
            "status": ["completed"] * epochs,
            "val_total": [0.05] * epochs,
        }
    )
    return RunSummary(cfg.name, cfg.outputs, cfg, metrics, "completed", "")


def _arm(
    label,
    seeds,
    rng,
    shared,
    *,
    mse=0.001,
    mse_seed_spread=0.0,
    purity=0.8,
    purity_seed_spread=0.0,
    iou=0.6,
    kl=2e-4,
    collapsed=False,
):
    """One arm's runs: per-image measures = the arm's level + a shared per-image part (the same
    layouts are hard for both) + a per-run offset + noise."""
    results = []
    for seed in seeds:
        offset = rng.normal()
        per_image = {
            "mse": np.clip(mse * (1 + shared + mse_seed_spread * offset + 0.1 * rng.normal(size=IMAGES)), 1e-6, None),
            "nn_midpoint_purity": np.clip(
                purity + 0.05 * shared + purity_seed_spread * rng.normal() + 0.02 * rng.normal(size=IMAGES), 0, 1
            ),
            "small_inter": np.tile(np.array([[iou * 100.0] * 3]), (IMAGES, 1)),
            "small_union": np.full((IMAGES, 3), 100.0),
        }
        for key in ("ssim", "purity", "sharpness_error", "noise_relative_sigma0.5"):
            per_image[key] = np.clip(0.9 + 0.01 * rng.normal(size=IMAGES), 0, None)
        metrics = {"interpolation": {"pairs": [{"validity": 0.9 + 0.01 * rng.normal()} for _ in range(PAIRS)]}}
        if label == "V2":
            metrics["posterior"] = {
                "kl_weighted": kl,
                "kl_nats_per_element": kl / 1e-4,
                "kl_bits_per_pixel": 0.01,
                "kl_share_of_loss": kl / 0.05,
                "active_share": 0.01 if collapsed else 0.6,
                "active_units": 1 if collapsed else 10,
                "units": 16,
                "collapsed": collapsed,
            }
        results.append(ModelResult(f"{label}_seed{seed}", label, seed, label == "V2", metrics, per_image, None, {}))
    return results


def _study(v1, v2):
    pairs = [Pair("room-room", i, i + 1) for i in range(PAIRS)]
    return Study(
        AnalysisSettings(),
        None,
        np.arange(IMAGES),
        np.repeat(np.arange(SCENES), IMAGES // SCENES),
        pairs,
        np.arange(0),
        None,
        {},
        v1 + v2,
        [0.0, 0.5, 1.0],
    )


def _runs(seeds, **kwargs):
    return {"V1": [_run(V1, s, **kwargs) for s in seeds], "V2": [_run(V2, s, **kwargs) for s in seeds]}


def _decide(seeds=(42, 43, 44), v1=None, v2=None, probe=None, **kwargs):
    rng = np.random.default_rng(0)
    shared = 0.3 * rng.normal(size=IMAGES)
    study = _study(_arm("V1", seeds, rng, shared, **(v1 or {})), _arm("V2", seeds, rng, shared, **(v2 or {})))
    return decide(study, _runs(seeds), train_images=22000, probe=probe, rule=Rule(resamples=500), **kwargs)


def _probe(v1_fld, v2_fld, half_width=2.0):
    experiments = {}
    for label, values in (("V1", v1_fld), ("V2", v2_fld)):
        for seed, value in zip((42, 43, 44), values):
            experiments[f"{label}_seed{seed}"] = {
                "generated": {"scores": {"fld": {"value": value, "ci95": [value - half_width, value + half_width]}}}
            }
    return {"settings": {"samples": 1000, "seeds": 1}, "experiments": experiments}


def test_the_vae_is_chosen_when_clearly_better_on_the_endpoint_and_non_inferior():
    d = _decide(v2={"purity": 0.9})  # no probe: the nearest-neighbour midpoints are the endpoint
    assert d["primary_endpoint"] == "nearest_neighbour_validity" and d["verdict"] == "vae better"
    assert d["choice"] == "variational" and d["chosen_experiment"] == "V2_seed42"
    c = d["criteria"]
    assert c["nearest_neighbour_validity"]["ci95"][0] > 0.05
    assert c["reconstruction_mse"]["verdict"] == c["small_class_iou"]["verdict"] == "non-inferior"
    assert d["data_sufficient"] and "provisional" not in d["summary"]


def test_differences_within_the_seed_to_seed_spread_are_inconclusive():
    # the VAE is 0.03 better on average, but runs of one arm differ by about 0.05
    d = _decide(v1={"purity_seed_spread": 0.05}, v2={"purity": 0.83, "purity_seed_spread": 0.05})
    primary = d["criteria"]["nearest_neighbour_validity"]
    assert primary["ci95"][0] < 0 < primary["ci95"][1]
    assert d["verdict"] == "inconclusive" and d["choice"] == "deterministic"
    assert "inconclusive" in d["summary"] and "includes zero" in d["reason"]
    # the same average gain with runs that agree with each other is a clear result
    assert _decide(v2={"purity": 0.83})["verdict"] == "vae better"


def test_one_seed_per_arm_cannot_decide():
    d = _decide(seeds=(42,), v2={"purity": 0.9})
    assert d["verdict"] == "inconclusive" and "run-to-run spread is unknown" in d["reason"]
    assert d["criteria"]["reconstruction_mse"]["n_seeds"] == [1, 1]


def test_a_vae_worse_beyond_a_margin_is_said_to_be_worse():
    d = _decide(v2={"purity": 0.9, "mse": 0.002})  # better endpoint, but twice the MSE
    assert d["criteria"]["reconstruction_mse"]["verdict"] == "inferior"
    assert d["verdict"] == "vae worse" and d["choice"] == "deterministic" and "reconstruction_mse" in d["reason"]
    d = _decide(v2={"purity": 0.9, "iou": 0.4})
    assert d["criteria"]["small_class_iou"]["verdict"] == "inferior" and d["verdict"] == "vae worse"


def test_the_probe_is_the_primary_endpoint_when_it_ran():
    better = _decide(v2={"purity": 0.7}, probe=_probe([30.0, 32.0, 31.0], [20.0, 21.0, 19.0]))
    assert better["primary_endpoint"] == "generation_fld" and better["verdict"] == "vae better"
    assert better["criteria"]["generation_fld"]["n_images"] == 3000
    noisy = _decide(probe=_probe([30.0, 20.0, 25.0], [22.0, 29.0, 24.0]))
    assert noisy["verdict"] == "inconclusive" and noisy["choice"] == "deterministic"
    worse = _decide(probe=_probe([20.0, 21.0, 19.0], [30.0, 32.0, 31.0]))
    assert worse["verdict"] == "vae worse"


def test_every_criterion_has_its_interval_seeds_and_images():
    d = _decide(probe=_probe([30.0, 32.0, 31.0], [20.0, 21.0, 19.0]))
    for name, criterion in d["criteria"].items():
        assert {"ci95", "n_seeds", "n_images", "verdict"} <= set(criterion), name
        if criterion["role"] != "flag":
            assert criterion["ci95"][0] <= criterion["estimate"] <= criterion["ci95"][1], name
            assert criterion["n_seeds"] == [3, 3]
    assert d["criteria"]["reconstruction_mse"]["n_images"] == IMAGES
    assert d["criteria"]["path_validity"]["n_images"] == PAIRS


def test_collapse_decides_and_the_kl_band_is_read_the_right_way():
    d = _decide(v2={"purity": 0.9, "kl": 2e-6, "collapsed": True})
    assert d["choice"] == "deterministic" and "collapse" in d["reason"]
    assert any("near the prior" in f and "towards collapse" in f for f in d["flags"])
    high = _decide(v2={"kl": 5e-3})
    assert any("barely regularises" in f for f in high["flags"]) and high["criteria"]["kl"]["verdict"] == "flag"
    assert _decide()["criteria"]["kl"]["kl_nats_per_element"] == pytest.approx([2.0] * 3)


def test_too_little_data_is_said_plainly():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=IMAGES)
    study = _study(_arm("V1", (1, 2), rng, shared), _arm("V2", (1, 2), rng, shared))
    d = decide(study, _runs((1, 2), epochs=2, resolution=64), train_images=300, rule=Rule(resamples=200))
    assert not d["data_sufficient"] and len(d["data_limits"]) == 3 and "too little to decide" in d["summary"]


def test_runs_trained_with_different_recipes_are_flagged(tmp_path):
    runs = [_run(V1, 42, root=tmp_path), _run(V2, 42, root=tmp_path)]
    for run, precision in zip(runs, ("fp16 (loss scaling)", "bf16")):
        path = run.outputs.provenance(run.name)
        path.parent.mkdir(parents=True)
        path.write_text(
            json.dumps(
                {
                    "sessions": [
                        {
                            "precision": precision,
                            "memory_format": "channels_last",
                            "compile": True,
                            "world_size": 1,
                            "torch": "2.13.0",
                        }
                    ]
                }
            )
        )
    flags = recipe_flags(runs)
    assert len(flags) == 1 and "precision" in flags[0] and "bf16" in flags[0] and "fp16" in flags[0]
    runs[1].outputs.provenance(runs[1].name).unlink()
    assert recipe_flags(runs) == [f"{runs[1].name}: no provenance.json, so its numerical recipe is unknown"]


def test_decision_files_and_a_loadable_phase1_3_config(tmp_path):
    for v2, variational in (({"purity": 0.9}, True), ({}, False)):
        d = _decide(v2=v2)
        runs = [run for arm in _runs((42, 43, 44)).values() for run in arm]
        for run in runs:
            run.name = run.name.replace("phase1_2_AE_", "").replace("_deterministic", "").replace("_vae_light", "")
        decision_path, config_path = write_decision(d, runs, Outputs(tmp_path, PHASE))
        assert (decision_path, config_path) == (
            tmp_path / PHASE / "decision.json",
            tmp_path / PHASE / "phase1_3_base.yaml",
        )
        assert json.loads(decision_path.read_text())["choice"] == d["choice"]
        cfg = load_config(config_path)
        assert cfg.model.variational is variational and cfg.name == "phase1_3_base"
        assert cfg.loss.kld == (1e-4 if variational else 0.0)
        assert (cfg.model.latent_channels, cfg.model.base_channels, cfg.model.downsampling_steps) == (16, 32, 4)


def test_the_study_is_deterministic_and_measures_every_run_alike(tiny_runs):
    runs, _ = load_runs(Outputs(tiny_runs, PHASE), [V1_NAME, V2_NAME])
    arms = {"V1": [runs[0]], "V2": [runs[1]]}
    settings = AnalysisSettings(max_images=12, device="cpu", pairs_per_kind=1, steps=5, neighbour_pool=20)
    study = run_study(arms, tiny_runs, settings, log=lambda _: None)
    first = study.to_json()
    path = tiny_runs / PHASE / "analysis" / "latent_metrics.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(first))
    second = run_study(arms, tiny_runs, settings, log=lambda _: None).to_json()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    v1, v2 = (first["models"][r.name] for r in runs)
    for model in (v1, v2):  # more latent noise moves the decoded layouts further
        change = model["noise"]["decoded_change"]
        assert all(a < b for a, b in zip(change, change[1:])) and change[0] > 0, model["noise"]
        assert model["interpolation"]["path"] == "linear"
    assert "posterior" in v2 and "posterior" not in v1 and v2["latent"]["of"] == "posterior samples"
    # one pair of each kind the measured layouts allow: room-room, scene-scene, room-scene
    types = study.data.val.types[study.positions]
    rooms, scenes = int((types == 0).sum()), int((types == 1).sum())
    possible = (rooms >= 2) + (scenes >= 2) + (rooms >= 1 and scenes >= 1)
    assert possible >= 1 and len(v1["interpolation"]["pairs"]) == len(first["pairs"]) == possible
    assert v1["reconstruction"]["all"]["images"] == min(12, len(study.data.val)) == first["validation_images"]
    # the per-image table: a row per run and layout, scenes named, what the decision resamples
    table = pd.read_csv(tiny_runs / PHASE / "analysis" / "per_image.csv")
    assert len(table) == 2 * first["validation_images"] and set(table["arm"]) == {"V1", "V2"}
    assert table.groupby("run")["mse"].mean()[V1_NAME] == pytest.approx(v1["reconstruction"]["all"]["mse"])
    d = decide(study, arms, train_images=len(study.data.train), rule=Rule(resamples=100))
    assert d["verdict"] == "inconclusive" and "run-to-run spread is unknown" in d["reason"]


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


def test_a_probe_that_misses_a_compared_run_is_not_the_endpoint(tmp_path):
    from imginav_core.analysis.decision import read_probe

    runs = [_run(V1, 42), _run(V2, 42)]
    path = tmp_path / "probe_metrics.json"
    assert read_probe(path, runs) == (None, [])  # no probe ran
    path.write_text(json.dumps({"experiments": {runs[0].name: {}}}))
    probe, why = read_probe(path, runs)
    assert probe is None and runs[1].name in why[0]
    path.write_text(json.dumps({"experiments": {run.name: {} for run in runs}}))
    assert read_probe(path, runs)[0] is not None
