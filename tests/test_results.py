"""The results files as records: each writes exactly the layout the analysis, the probe and the
decision wrote before they were records (the report, the tests and users read those keys), and a
file with a key missing or of another type is refused naming the file and the key."""

import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import PHASE, V1
from test_decision import CLEAR_WIN, SEEDS, _arm, _decide, _probe, _run, _runs, _study, _write_probe

from imginav_core.errors import ProbeError
from imginav_core.outputs import Outputs
from imginav_core.study.analysis.decision import write_decision
from imginav_core.study.analysis.endpoint import read_probe
from imginav_core.study.results import Decision, LatentMetrics, ProbeMetrics, ResultsError

# decision.json's keys in the order the decision wrote them as a dict
DECISION_KEYS = [
    "choice",
    "verdict",
    "primary_endpoint",
    "chosen_experiment",
    "arms",
    "planned_runs",
    "missing_runs",
    "evaluation_split",
    "summary",
    "reason",
    "data_sufficient",
    "data_limits",
    "criteria",
    "flags",
    "rule",
    "protocol",
]


def _old_latent_metrics(study) -> dict:
    """latent_metrics.json's content as the study wrote it as a dict."""
    return {
        "settings": dataclasses.asdict(study.settings),
        "evaluation_split": study.evaluation_split,
        "evaluation_images": int(len(study.positions)),
        "evaluation_scenes": int(len(np.unique(study.scene_ids))),
        "evaluation_groups": int(len(np.unique(study.groups))),
        "split": study.data.split_summary(),
        "arms": {label: [r.name for r in study.arm(label)] for label in ("V1", "V2")},
        "pairs": [dataclasses.asdict(p) | {"label": p.label} for p in study.pairs],
        "alphas": study.alphas,
        "models": {r.name: r.metrics for r in study.models},
        "resources": study.resources,  # since the analysis records its seconds and peak memory; older files lack it
    }


def _constructed_study():
    rng = np.random.default_rng(0)
    study = _study(_arm("V1", SEEDS, rng, 0.0), _arm("V2", SEEDS, rng, 0.0))
    split = {"layouts": {"train": 700, "val": 100, "test": 200}, "groups": 120, "duplicate_rate": 0.15}
    study.data = SimpleNamespace(train=range(22000), split_summary=lambda: split)
    study.models[0].metrics["reconstruction"] = {"all": {"mse": float("nan")}}  # a measure without a value
    return study


def _old_text(content: dict) -> str:
    return json.dumps(content, indent=1, allow_nan=True)  # how each of the three was written


def test_latent_metrics_are_written_as_before_and_read_back(tmp_path):
    study = _constructed_study()
    path = study.latent_metrics().write(tmp_path / "latent_metrics.json")
    assert path.read_text() == _old_text(_old_latent_metrics(study))
    again = LatentMetrics.read(path)
    assert math.isnan(again.models[study.models[0].name]["reconstruction"]["all"]["mse"])  # NaN stays NaN
    assert again.posterior(study.arm("V2")[0].name)["kl_weighted"] == pytest.approx(2e-4)
    with pytest.raises(ResultsError, match=f"no posterior measures for run '{study.arm('V1')[0].name}'"):
        again.posterior(study.arm("V1")[0].name)


def test_the_decision_is_written_as_before_and_read_back(tmp_path):
    decision = _decide(probe=_probe(*CLEAR_WIN))
    runs = [run for arm in _runs(SEEDS).values() for run in arm]
    path, _ = write_decision(decision, runs, Outputs(tmp_path, PHASE))
    old = {key: getattr(decision, key) for key in DECISION_KEYS}
    assert path.read_text() == _old_text(old)
    assert Decision.read(path) == decision and decision.primary is decision.criteria["generation_fld"]


def test_the_probe_metrics_are_written_as_before_and_read_back(tmp_path):
    old = {
        "settings": {"samples": 1000, "seeds": 1, "seed": 0},
        "device": "cpu",
        "precision": "fp32",
        "data": {"train": 700, "test": 200, "resolution": 64},
        "scorers": [{"seed": 0}],
        "layouts": {"high_frequency": {"share": 0.1}},
        "experiments": {"v1": {"generated": {"scores": {"fld": {"value": 30.0}}}, "budgets": {"50": {"fld": 29.0}}}},
        "timings": {"total": 1.5},
    }
    path = ProbeMetrics(**old).write(tmp_path / "probe_metrics.json")
    assert path.read_text() == _old_text(old)
    probe = ProbeMetrics.read(path)
    assert probe.generated("v1")["scores"]["fld"]["value"] == 30.0 and probe.budgets("v1") == {"50": {"fld": 29.0}}


@pytest.mark.parametrize(
    "record,key,value,expected",
    [
        (Decision, "choice", 3, "a string or null"),
        (Decision, "data_sufficient", 1, "true or false"),
        (Decision, "criteria", [], "an object"),
        (LatentMetrics, "evaluation_images", "240", "an integer"),
        (LatentMetrics, "evaluation_images", True, "an integer"),
        (LatentMetrics, "alphas", {"0": 0.5}, "a list"),
        (ProbeMetrics, "experiments", None, "an object"),
    ],
)
def test_a_mistyped_key_is_refused_naming_the_file_and_the_key(tmp_path, record, key, value, expected):
    content = {field.name: _valid(field.type) for field in dataclasses.fields(record)}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(content))
    assert record.read(path) == record(**content)  # the valid file reads
    path.write_text(json.dumps(content | {key: value}))
    with pytest.raises(ResultsError) as err:
        record.read(path)
    assert str(err.value) == f"{path}: '{key}' should be {expected}, got {json.dumps(value)}"
    del content[key]
    path.write_text(json.dumps(content))
    with pytest.raises(ResultsError) as err:
        record.read(path)
    assert str(err.value) == f"{path}: the key '{key}' is missing (written by {record.__name__}.write)"


def _valid(annotation: str):
    """A value of the field's type, from its annotation's text."""
    for start, value in (("dict", {}), ("list", []), ("str", "x"), ("int", 1), ("float", 0.5), ("bool", False)):
        if annotation.startswith(start):
            return value
    raise AssertionError(annotation)


def test_a_file_that_is_not_json_or_not_there_is_named(tmp_path):
    path = tmp_path / "decision.json"
    with pytest.raises(ResultsError, match=f"{path}: no such file"):
        Decision.read(path)
    path.write_text('{"choice": ')  # cut short
    with pytest.raises(ResultsError, match=f"{path}: not readable as JSON"):
        Decision.read(path)
    path.write_text("[]")
    with pytest.raises(ResultsError, match="expected a JSON object with Decision's keys, got list"):
        Decision.read(path)


def test_the_decision_refuses_a_probe_file_without_one_of_its_keys(tmp_path):
    runs = [_run(V1, 42, root=tmp_path)]
    out = runs[0].outputs
    _write_probe(out, dataclasses.replace(_probe((30.0,), (20.0,), seeds=(42,)), device=None))
    expected = "probe_metrics.json is not the probe's metrics as the probe writes them ('device' should be a string"
    with pytest.raises(ProbeError) as err:
        read_probe(out.probe_metrics, runs)
    assert expected in str(err.value) and "bsub < hpc/diffusion_probe.sh" in str(err.value)


def test_a_probe_file_without_the_guard_reads_and_says_so(tmp_path):
    """The guard is a per-run field (``experiments.<run>.guard``) that older probe files lack: they
    still read (their top-level keys are all there), the guard comes back None for the decision to
    flag, and a guard of another shape is refused naming the run and the key."""
    experiment = {"generated": {"scores": {"fld": {"value": 30.0}}}}
    content = {
        "settings": {},
        "device": "cpu",
        "precision": "fp32",
        "data": {},
        "scorers": [],
        "layouts": {},
        "experiments": {"old": experiment, "new": experiment | {"guard": {"by_scorer": {"0": {"x": 1}}}}},
        "timings": {},
    }
    path = tmp_path / "probe_metrics.json"
    path.write_text(json.dumps(content))
    probe = ProbeMetrics.read(path)
    assert probe.guard("old") is None
    with pytest.raises(
        ResultsError, match=r"experiments.new.guard.by_scorer should map each scorer seed to coverage_floor"
    ):
        probe.guard("new")
    del content["experiments"]
    path.write_text(json.dumps(content))
    with pytest.raises(ResultsError, match="the key 'experiments' is missing"):
        ProbeMetrics.read(path)
