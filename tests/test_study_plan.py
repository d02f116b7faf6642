"""The study plan: the job array's table of runs, derived from configs/phase1_2/study.yaml and the
experiment configs, what it costs, the plan a study records in its output root, and how the probe
and the analysis take their runs from it."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

from imginav_core import load_config
from imginav_core.errors import ConfigError
from imginav_core.study.parameters import (
    analysis_parameters,
    environment_plan,
    jobs_plan,
    probe_parameters,
    recorded_plan,
    study_outputs,
)
from imginav_core.study.plan import (
    arm_indices,
    arm_names,
    index_ranges,
    make_study_plan,
    plan_cost_text,
    plan_gpu_hours,
    planned_run,
    read_plan_file,
    study_plan,
    sweep_names,
    sweep_points,
    write_study_plan,
)

STUDY = ROOT / "configs/phase1_2/study.yaml"
# a study file's arms and decision, as the tests' study files write them
ARM = (
    "arms:\n"
    '  V1: {config: V1_deterministic.yaml, colour: "#377eb8", page: V1_training}\n'
    '  V2: {config: V2_vae_light.yaml, colour: "#e41a1c", page: V2_training}\n'
)
DECISION = "decision: [V1, V2]\n"


def _study_file() -> dict:
    """study.yaml read here independently of the package: what the table must follow."""
    return yaml.safe_load(STUDY.read_text())


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "imginav_core", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_the_table_is_each_arm_with_each_seed_as_the_configs_say():
    study = _study_file()
    plan = study_plan()
    expected = []
    for arm, entry in study["arms"].items():
        config = entry["config"]
        cfg = load_config(STUDY.parent / config)
        expected += [
            (arm, f"configs/phase1_2/{config}", seed, cfg.loss.kld, f"{cfg.name}_seed{seed}", False)
            for seed in study["seeds"]
        ]
    assert [(r.arm, r.config, r.seed, r.kld, r.name, r.sweep) for r in plan] == expected
    assert [r.index for r in plan] == list(range(1, len(expected) + 1))
    # 5 seeds per arm by default (study.yaml says why: the power to detect 2 seed standard deviations)
    assert [r.arm for r in plan] == ["V1"] * 5 + ["V2"] * 5 and [r.kld for r in plan] == [0.0] * 5 + [1e-4] * 5
    assert arm_names(plan, "V2") == [f"phase1_2_AE_V2_vae_light_seed{s}" for s in (42, 43, 44, 45, 46)]
    assert arm_indices(plan) == {"V1": "1-5", "V2": "6-10"}
    assert len({r.name for r in plan}) == len(plan)  # each run its own folder


def test_the_kl_sweep_is_appended_only_when_asked_each_arms_own_weight_not_trained_twice():
    study = _study_file()
    plan, with_sweep = study_plan(), study_plan(sweep=True)
    assert study_plan(sweep=False) == plan and not any(r.sweep for r in plan)
    assert with_sweep[: len(plan)] == plan  # the comparison runs keep their indices
    swept = with_sweep[len(plan) :]
    # six weights, from the deterministic encoder to a strongly regularised VAE; 0 is V1's, 1e-4 V2's
    assert [float(k) for k in study["kld_sweep"]] == [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    own = {arm: load_config(STUDY.parent / entry["config"]).loss.kld for arm, entry in study["arms"].items()}
    assert own == {"V1": 0.0, "V2": 1e-4}
    trained = [1e-5, 1e-3, 1e-2, 1e-1]  # the VAE at the others
    assert [(r.kld, r.seed) for r in swept] == [(k, s) for k in trained for s in study["seeds"]]
    assert all(
        r.sweep and r.arm == study["sweep_arm"] and r.config == "configs/phase1_2/V2_vae_light.yaml" for r in swept
    )
    assert len(with_sweep) == 30 and len({r.name for r in with_sweep}) == 30  # each run its own folder
    assert swept[-1].name == "phase1_2_AE_V2_vae_light_kld0.1_seed46" and swept[-1].index == 30
    assert arm_names(with_sweep, "V2") == arm_names(plan, "V2")  # the sweep is not part of the comparison
    points = sweep_points(with_sweep, study["kld_sweep"])
    assert [(p.kld, p.arm, p.comparison) for p in points] == [
        (0.0, "V1", True),  # the deterministic encoder: V1's comparison runs
        (1e-5, "V2", False),
        (1e-4, "V2", True),  # V2's comparison runs
        (1e-3, "V2", False),
        (1e-2, "V2", False),
        (1e-1, "V2", False),
    ]
    assert points[0].names == arm_names(plan, "V1") and points[2].names == arm_names(plan, "V2")
    assert points[3].names == [f"phase1_2_AE_V2_vae_light_kld0.001_seed{s}" for s in study["seeds"]]
    assert sweep_names(plan, []) == {}
    with pytest.raises(ConfigError, match="KL weight 1e-05 of the sweep has no runs"):
        sweep_points(plan, study["kld_sweep"])  # a sweep asked of a plan made without it
    assert arm_indices(with_sweep) == {"V1": "1-5", "V2": "6-30"}


def test_the_plan_says_what_its_runs_cost_in_gpu_hours():
    """1.0-1.9 GPU-hours a run (10 epochs over 27,897 layouts at 40-80 images/s): the comparison's 10
    runs 10-19, the sweep's 20 more 19-39."""
    with_sweep = study_plan(sweep=True)
    low, high = (10 * 27_897 / rate / 3600 for rate in (80, 40))
    assert plan_gpu_hours(with_sweep) == pytest.approx((30 * low, 30 * high))
    text = plan_cost_text(with_sweep)
    assert "The comparison: 10 runs (V1 5, V2 5), 10-19 GPU-hours." in text
    assert "The KL sweep: 20 runs more (V2 at KL weights 1e-05, 0.001, 0.01, 0.1 x 5 seeds" in text
    assert "V1 0, V2 0.0001), 19-39 GPU-hours; 30 runs in all, 29-58 GPU-hours." in text
    assert "1.0-1.9 GPU-hours" in text and "40-80 images/s" in text
    assert "KL sweep" not in plan_cost_text(study_plan())


def test_the_environment_changes_the_seeds_and_adds_the_sweep():
    plan = environment_plan({"IMGINAV_SEEDS": "1,2"})
    assert [(r.index, r.arm, r.seed) for r in plan] == [(1, "V1", 1), (2, "V1", 2), (3, "V2", 1), (4, "V2", 2)]
    assert plan[0].name == "phase1_2_AE_V1_deterministic_seed1"
    assert environment_plan({"IMGINAV_SEEDS": "", "IMGINAV_KLD_SWEEP": "0"}) == study_plan()  # empty: the default
    assert environment_plan({"IMGINAV_KLD_SWEEP": "true"}) == study_plan(sweep=True)


@pytest.mark.parametrize(
    "variable,value,message",
    [
        ("IMGINAV_SEEDS", "42;43", "IMGINAV_SEEDS = '42;43': expected integer seeds separated by commas"),
        ("IMGINAV_SEEDS", "42,42", "IMGINAV_SEEDS = [42, 42]: each seed once"),
        ("IMGINAV_SEEDS", "-1", "IMGINAV_SEEDS = [-1]: expected a list of integer seeds"),
        ("IMGINAV_KLD_SWEEP", "yes", "IMGINAV_KLD_SWEEP = 'yes': expected 1 or true"),
    ],
)
def test_a_bad_plan_variable_is_refused_naming_it(variable, value, message):
    with pytest.raises(ConfigError) as err:
        environment_plan({variable: value})
    assert message in str(err.value)
    done = _run("plan", "--from-env", env={variable: value})  # what the launcher and the jobs run
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "text,message",
    [
        (f"{ARM}{DECISION}seeds: [1]\nseed: 2\n", "unknown key 'seed'"),
        (f"{ARM}{DECISION}", "missing key 'seeds'"),
        (f"{ARM}seeds: [1]\n", "missing key 'decision'"),
        (f"{ARM}decision: [V1, V1]\nseeds: [1]\n", "'decision' = ['V1', 'V1']"),
        (f"{ARM}{DECISION}seeds: [1]\nkld_sweep: [1.0e-3]\nsweep_arm: V9\n", "'sweep_arm' = 'V9'"),
        (
            f"{ARM}{DECISION}seeds: [1]\nkld_sweep: [1.0e-3]\nsweep_arm: V1\n",
            "a KL weight needs a variational encoder",
        ),
        (f"{ARM.replace('V1_deterministic', 'missing')}{DECISION}seeds: [1]\n", "config file not found"),
        (f"arms:\n  V1: V1_deterministic.yaml\n{DECISION}seeds: [1]\n", "'arms.V1' = 'V1_deterministic.yaml'"),
        (f"{ARM.replace(', page: V1_training', '')}{DECISION}seeds: [1]\n", "'arms.V1': missing key 'page'"),
        (f"{ARM.replace('#377eb8', 'blue')}{DECISION}seeds: [1]\n", "'arms.V1.colour' = 'blue'"),
    ],
)
def test_a_bad_study_file_is_refused_naming_the_file_and_key(tmp_path, text, message):
    (tmp_path / "phase1_2").mkdir()  # a copy of configs/: common.yaml inherits ../phase1_1_architecture.yaml
    study = tmp_path / "phase1_2" / "study.yaml"
    study.write_text(text)
    for config in ("V1_deterministic.yaml", "V2_vae_light.yaml", "common.yaml"):
        (study.parent / config).write_text((STUDY.parent / config).read_text())
    (tmp_path / "phase1_1_architecture.yaml").write_text((ROOT / "configs/phase1_1_architecture.yaml").read_text())
    with pytest.raises(ConfigError) as err:
        study_plan(sweep=True, plan_file=study)
    assert message in str(err.value)
    if "key" in message:
        assert str(study) in str(err.value)


def test_a_run_outside_the_plan_is_refused_saying_the_range():
    with pytest.raises(ConfigError, match=r"array index 11 is not in the study plan: it has runs 1\.\.10"):
        planned_run(study_plan(), 11)
    assert planned_run(study_plan(), 10).name == "phase1_2_AE_V2_vae_light_seed46"
    assert index_ranges([9, 1, 2, 3, 5, 6]) == "1-3,5-6,9"
    assert read_plan_file().sweep_arm == "V2"


def test_the_plan_command_prints_the_table_and_the_cost():
    done = _run("plan", "--seeds", "7", "--sweep")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "| index | arm | name | config | seed | kld | sweep | GPU-hours |"
    assert lines[2] == (
        "| 1 | V1 | phase1_2_AE_V1_deterministic_seed7 | configs/phase1_2/V1_deterministic.yaml | 7 | 0 | no "
        "| 1.0-1.9 |"
    )
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 6 and rows[-1] == (
        "| 6 | V2 | phase1_2_AE_V2_vae_light_kld0.1_seed7 | configs/phase1_2/V2_vae_light.yaml | 7 | 0.1 | yes "
        "| 1.0-1.9 |"
    )
    assert "The KL sweep: 4 runs more (V2 at KL weights 1e-05, 0.001, 0.01, 0.1 x 1 seed;" in done.stdout
    arrays = _run("plan", "--from-env", "--arrays", env={"IMGINAV_SEEDS": "1,2", "IMGINAV_KLD_SWEEP": "1"})
    assert arrays.stdout.splitlines() == ["V1 1-2", "V2 3-12"]


def test_without_a_recorded_plan_the_probe_and_the_analysis_take_the_default_plans_runs(tmp_path):
    plan = study_plan()
    _, names, settings = probe_parameters(output_root=str(tmp_path))
    assert names == arm_names(plan, "V1") + arm_names(plan, "V2") and settings.seeds == 1
    values = analysis_parameters(output_root=str(tmp_path))
    assert values["experiment_v1"] == arm_names(plan, "V1") and values["experiment_v2"] == arm_names(plan, "V2")
    given = analysis_parameters(experiment_v1="a_seed1, a_seed2", experiment_v2="b")
    assert given["experiment_v1"] == ["a_seed1", "a_seed2"] and given["experiment_v2"] == ["b"]
    with pytest.raises(ConfigError, match="both name a"):
        analysis_parameters(experiment_v1="a", experiment_v2="a")
    with pytest.raises(ConfigError, match="is no run name"):
        probe_parameters(experiments="ok,../elsewhere")


def _record(root, seeds, sweep):
    """What `plan --from-env --record` writes for a study under ``root``."""
    return write_study_plan(study_outputs(root).study_plan, make_study_plan(seeds, sweep))


def test_the_output_root_alone_says_which_runs_a_study_has(tmp_path):
    """After a study launched with other seeds (here 7 and 8, with the sweep), the probe and the
    analysis given only its output root take that study's runs: the probe every one, the sweep's
    too; the analysis each arm's. A -p list still wins."""
    _record(tmp_path, [7, 8], True)
    plan = study_plan(seeds=[7, 8], sweep=True)
    _, names, _ = probe_parameters(output_root=str(tmp_path))
    assert names == [run.name for run in plan] and len(names) == 12  # 2 seeds x (2 arms + 4 sweep weights)
    values = analysis_parameters(output_root=str(tmp_path))
    assert values["experiment_v1"] == ["phase1_2_AE_V1_deterministic_seed7", "phase1_2_AE_V1_deterministic_seed8"]
    assert values["experiment_v2"] == arm_names(plan, "V2")
    assert analysis_parameters(output_root=str(tmp_path), experiment_v1="x")["experiment_v1"] == ["x"]
    recorded = recorded_plan(tmp_path)
    assert recorded.runs == plan and recorded.seeds == [7, 8] and recorded.sweep
    assert recorded.study == _study_file() and recorded.study_text == STUDY.read_text()
    assert [p.kld for p in recorded.sweep_points()] == [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert recorded.source == str(study_outputs(tmp_path).study_plan)
    # the jobs: the variables, when set, are the plan they run; else the recorded one
    assert jobs_plan(tmp_path, {}).runs == plan
    assert jobs_plan(tmp_path, {"IMGINAV_SEEDS": "42"}).runs == study_plan(seeds=[42])
    assert jobs_plan(tmp_path / "elsewhere", {}).runs == study_plan()  # nothing recorded: the default


def test_plan_record_writes_what_the_jobs_run_and_the_analysis_check_follows_it(tmp_path):
    env = {"IMGINAV_SEEDS": "7,8", "IMGINAV_OUTPUTS": str(tmp_path)}
    done = _run("plan", "--from-env", "--record", env=env)
    assert done.returncode == 0, done.stderr
    path = study_outputs(tmp_path).study_plan
    assert str(path) in done.stdout
    record = json.loads(path.read_text())
    assert (
        record["seeds"] == [7, 8] and record["sweep"] is False and record["study_file"] == "configs/phase1_2/study.yaml"
    )
    assert [row["name"] for row in record["runs"]] == [run.name for run in study_plan(seeds=[7, 8])]
    # later, by hand, without the plan's variables: the analysis job's lists are the recorded plan's
    checked = _run(
        "check",
        "analysis",
        "--from-env",
        "--parameters-only",
        env={"IMGINAV_OUTPUTS": str(tmp_path), "IMGINAV_SEEDS": ""},
    )
    assert checked.returncode == 0, checked.stderr
    assert "phase1_2_AE_V1_deterministic_seed7,phase1_2_AE_V1_deterministic_seed8" in checked.stdout
    refused = _run("plan", "--record")
    assert (
        refused.returncode == 2 and "--record writes the plan the jobs run: give it with --from-env" in refused.stderr
    )


@pytest.mark.parametrize(
    "text,message",
    [
        ("{", "not a recorded study plan"),
        ('{"seeds": [1]}', "missing: sweep, study_file, study, study_text, runs"),
        (
            '{"seeds": [1], "sweep": false, "study_file": "s", "study": {}, "study_text": "", "runs": [{"index": 1}]}',
            "'runs' row 1",
        ),
    ],
)
def test_a_bad_recorded_plan_is_refused_naming_the_file_and_what_is_wrong(tmp_path, text, message):
    path = study_outputs(tmp_path).study_plan
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        analysis_parameters(output_root=str(tmp_path))
    assert message in str(err.value) and str(path) in str(err.value)
