"""The study plan: the job array's table of runs, derived from configs/phase1_2/study.yaml and the
experiment configs, and how the probe and the analysis take their runs from it."""

import os
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

from imginav_core import load_config
from imginav_core.errors import ConfigError
from imginav_core.parameters import analysis_parameters, environment_plan, probe_parameters
from imginav_core.study_plan import (
    arm_indices,
    arm_names,
    index_ranges,
    planned_run,
    read_plan_file,
    study_plan,
    sweep_names,
)

STUDY = ROOT / "configs/phase1_2/study.yaml"


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
    for arm, config in study["arms"].items():
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


def test_the_kl_sweep_is_appended_only_when_asked():
    study = _study_file()
    plan, with_sweep = study_plan(), study_plan(sweep=True)
    assert study_plan(sweep=False) == plan and not any(r.sweep for r in plan)
    assert with_sweep[: len(plan)] == plan  # the comparison runs keep their indices
    swept = with_sweep[len(plan) :]
    own = load_config(STUDY.parent / study["arms"][study["sweep_arm"]]).loss.kld
    weights = [float(k) for k in study["kld_sweep"] if float(k) != own]  # the arm's own weight: its comparison runs
    assert [(r.kld, r.seed) for r in swept] == [(k, s) for k in weights for s in study["seeds"]]
    assert all(
        r.sweep and r.arm == study["sweep_arm"] and r.config == "configs/phase1_2/V2_vae_light.yaml" for r in swept
    )
    assert swept[-1].name == "phase1_2_AE_V2_vae_light_kld0.001_seed46" and swept[-1].index == len(with_sweep)
    assert arm_names(with_sweep, "V2") == arm_names(plan, "V2")  # the sweep is not part of the comparison
    points = sweep_names(with_sweep)
    assert sorted(points) == sorted(float(k) for k in study["kld_sweep"])
    assert points[own] == arm_names(plan, "V2") and sweep_names(plan) == {}
    assert arm_indices(with_sweep) == {"V1": "1-5", "V2": f"6-{len(with_sweep)}"}


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
        ("arms: {V1: V1_deterministic.yaml}\nseeds: [1]\nseed: 2\n", "unknown key 'seed'"),
        ("arms: {V1: V1_deterministic.yaml}\n", "missing key 'seeds'"),
        ("arms: {V1: V1_deterministic.yaml}\nseeds: [1]\nkld_sweep: [1.0e-3]\nsweep_arm: V9\n", "'sweep_arm' = 'V9'"),
        (
            "arms: {V1: V1_deterministic.yaml}\nseeds: [1]\nkld_sweep: [1.0e-3]\nsweep_arm: V1\n",
            "a KL weight needs a variational encoder",
        ),
        ("arms: {V1: missing.yaml}\nseeds: [1]\n", "config file not found"),
    ],
)
def test_a_bad_study_file_is_refused_naming_the_file_and_key(tmp_path, text, message):
    (tmp_path / "phase1_2").mkdir()  # a copy of configs/: common.yaml inherits ../phase1_1_architecture.yaml
    study = tmp_path / "phase1_2" / "study.yaml"
    study.write_text(text)
    for config in ("V1_deterministic.yaml", "common.yaml"):
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


def test_the_plan_command_prints_the_table():
    done = _run("plan", "--seeds", "7", "--sweep")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "| index | arm | name | config | seed | kld | sweep |"
    assert (
        lines[2]
        == "| 1 | V1 | phase1_2_AE_V1_deterministic_seed7 | configs/phase1_2/V1_deterministic.yaml | 7 | 0 | no |"
    )
    assert lines[-1] == (
        "| 5 | V2 | phase1_2_AE_V2_vae_light_kld0.001_seed7 | configs/phase1_2/V2_vae_light.yaml | 7 | 0.001 | yes |"
    )
    arrays = _run("plan", "--from-env", "--arrays", env={"IMGINAV_SEEDS": "1,2", "IMGINAV_KLD_SWEEP": "1"})
    assert arrays.stdout.splitlines() == ["V1 1-2", "V2 3-10"]


def test_the_probe_and_the_analysis_take_the_plans_comparison_runs_by_default():
    plan = study_plan()
    _, names, settings = probe_parameters()
    assert names == arm_names(plan, "V1") + arm_names(plan, "V2") and settings.seeds == 1
    values = analysis_parameters()
    assert values["experiment_v1"] == arm_names(plan, "V1") and values["experiment_v2"] == arm_names(plan, "V2")
    given = analysis_parameters(experiment_v1="a_seed1, a_seed2", experiment_v2="b")
    assert given["experiment_v1"] == ["a_seed1", "a_seed2"] and given["experiment_v2"] == ["b"]
    with pytest.raises(ConfigError, match="both name a"):
        analysis_parameters(experiment_v1="a", experiment_v2="a")
    with pytest.raises(ConfigError, match="is no run name"):
        probe_parameters(experiments="ok,../elsewhere")
