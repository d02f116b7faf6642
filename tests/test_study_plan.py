"""The study as a written plan: the runs follow from configs/phase1_2/study.yaml and the experiment
configs; `plan` writes every run's config, the plan and the protocol under the output root before
anything runs; a written plan is fixed; the plan is read back, also from a copied study."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

from imginav_core import load_config
from imginav_core.errors import ConfigError
from imginav_core.study.arms import read_study_file
from imginav_core.study.budget import plan_cost_text, plan_gpu_hours
from imginav_core.study.plan import arrays, find_plan, index_ranges, make_plan, read_plan, write_plan

STUDY = ROOT / "configs/phase1_2/study.yaml"
# a study file's arms and decision, as the tests' study files write them
ARM = (
    "arms:\n"
    '  V1: {config: V1_deterministic.yaml, colour: "#377eb8", page: V1_training, queue: gpuv100}\n'
    '  V2: {config: V2_vae_light.yaml, colour: "#e41a1c", page: V2_training, queue: gpul40s}\n'
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
        env={**{k: v for k, v in os.environ.items() if not k.startswith("IMGINAV_")}, **(env or {})},
    )


def test_the_table_is_each_arm_with_each_seed_as_the_configs_say(tmp_path):
    study = _study_file()
    plan = make_plan(tmp_path)
    expected = []
    for arm, entry in study["arms"].items():
        cfg = load_config(STUDY.parent / entry["config"])
        expected += [(arm, seed, cfg.loss.kld, f"{cfg.name}_seed{seed}", False) for seed in study["seeds"]]
    assert [(r.arm, r.seed, r.kld, r.name, r.sweep) for r in plan.runs] == expected
    assert [r.index for r in plan.runs] == list(range(1, len(expected) + 1))
    # 5 seeds per arm by default (study.yaml says why: the power to detect 2 seed standard deviations)
    assert [r.arm for r in plan.runs] == ["V1"] * 5 + ["V2"] * 5
    assert plan.arm_names("V2") == [f"phase1_2_AE_V2_vae_light_seed{s}" for s in (42, 43, 44, 45, 46)]
    assert arrays(plan, plan.runs) == [("V1", "1-5", "gpuv100"), ("V2", "6-10", "gpul40s")]
    # each run's config is its arm's, with the run's name and seed: nothing else differs within an arm
    v2 = [plan.configs[name] for name in plan.arm_names("V2")]
    assert [c.training.seed for c in v2] == [42, 43, 44, 45, 46] and {c.loss.kld for c in v2} == {1e-4}
    assert {c.output_root for c in v2} == {str(tmp_path.resolve())}


def test_the_kl_sweep_is_appended_only_when_asked_each_arms_own_weight_not_trained_twice(tmp_path):
    study = _study_file()
    plan, with_sweep = make_plan(tmp_path), make_plan(tmp_path, sweep=True)
    assert not any(r.sweep for r in plan.runs) and with_sweep.runs[: len(plan.runs)] == plan.runs
    swept = with_sweep.runs[len(plan.runs) :]
    assert [float(k) for k in study["kld_sweep"]] == [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    trained = [1e-5, 1e-3, 1e-2, 1e-1]  # 0 is V1's own weight, 1e-4 V2's: their comparison runs
    assert [(r.kld, r.seed) for r in swept] == [(k, s) for k in trained for s in study["seeds"]]
    assert all(r.sweep and r.arm == "V2" for r in swept) and len(with_sweep.runs) == 30
    assert swept[-1].name == "phase1_2_AE_V2_vae_light_kld0.1_seed46" and swept[-1].index == 30
    assert with_sweep.configs[swept[-1].name].loss.kld == 0.1
    points = with_sweep.sweep_points()
    assert [(p.kld, p.arm, p.comparison) for p in points] == [
        (0.0, "V1", True),
        (1e-5, "V2", False),
        (1e-4, "V2", True),
        (1e-3, "V2", False),
        (1e-2, "V2", False),
        (1e-1, "V2", False),
    ]
    assert points[0].names == plan.arm_names("V1") and plan.sweep_points() == []
    assert arrays(with_sweep, with_sweep.runs) == [("V1", "1-5", "gpuv100"), ("V2", "6-30", "gpul40s")]


def test_the_plan_says_what_its_runs_cost_in_gpu_hours(tmp_path):
    """1.0-1.9 GPU-hours a run (10 epochs over 27,897 layouts at 40-80 images/s): the comparison's 10
    runs 10-19, the sweep's 20 more 19-39."""
    with_sweep = make_plan(tmp_path, sweep=True)
    low, high = (10 * 27_897 / rate / 3600 for rate in (80, 40))
    assert plan_gpu_hours(with_sweep) == pytest.approx((30 * low, 30 * high))
    text = plan_cost_text(with_sweep)
    assert "The comparison: 10 runs (V1 5, V2 5), 10-19 GPU-hours." in text
    assert "The KL sweep: 20 runs more (V2 at KL weights 1e-05, 0.001, 0.01, 0.1 x 5 seeds" in text
    assert "19-39 GPU-hours; 30 runs in all, 29-58 GPU-hours." in text
    assert "KL sweep" not in plan_cost_text(make_plan(tmp_path))


def test_set_takes_config_probe_and_analysis_keys_typed_and_refuses_the_others(tmp_path):
    plan = make_plan(
        tmp_path,
        seeds=[1, 2],
        settings={"training.lr": 3e-4, "probe.steps": 300, "probe.noise_levels": [10, 20], "analysis.max_images": 64},
    )
    assert {c.training.lr for c in plan.configs.values()} == {3e-4}
    assert plan.probe.steps == 300 and plan.probe.noise_levels == (10, 20) and plan.analysis.max_images == 64
    for settings, message in [
        ({"training.seed": 3}, "--set training.seed: the plan sets each run's training.seed itself (use --seeds)"),
        ({"name": "x"}, "--set name: the plan sets each run's name itself"),
        ({"probe.stepz": 3}, "--set probe.stepz: no such probe setting; the probe settings are"),
        ({"analysis.max_images": 1}, "analysis setting 'max_images' = 1: need at least 2 layouts"),
        ({"probe.steps": 0}, "probe setting 'steps' = 0: expected a positive integer"),
        ({"training.lr_": 1}, "unknown override key 'training.lr_' (did you mean 'training.lr'?)"),
        ({"loss.kld": 1e-3}, "a KL weight needs a variational encoder"),  # V1 cannot take it
    ]:
        with pytest.raises(ConfigError) as err:
            make_plan(tmp_path, settings=settings)
        assert message in str(err.value), (settings, str(err.value))


def test_plan_writes_every_runs_config_the_plan_and_the_protocol_before_anything_runs(tmp_path):
    root = tmp_path / "study"
    done = _run("plan", "--out", str(root), "--seeds", "42,43", "--set", "training.epochs=3", "--set", "probe.lr=3e-3")
    assert done.returncode == 0, done.stderr
    assert "| 4 | V2 | phase1_2_AE_V2_vae_light_seed43 | 43 |" in done.stdout and "study plan written" in done.stdout
    phase = root / "phase1_2_vae_test"
    written = json.loads((phase / "study_plan.json").read_text())
    assert [r["config"] for r in written["runs"]] == [
        f"experiments/{r['name']}/planned.yaml" for r in written["runs"]
    ]  # relative to the output root
    assert written["settings"] == {"training.epochs": 3, "probe.lr": 0.003} and written["probe"]["lr"] == 0.003
    config = root / "experiments/phase1_2_AE_V2_vae_light_seed43/planned.yaml"
    text = yaml.safe_load(config.read_text())
    # complete, auto left as auto, the output root relative to the file (a copied study still reads)
    assert text["training"]["epochs"] == 3 and text["training"]["seed"] == 43 and text["training"]["device"] == "auto"
    assert text["output_root"] == "../.." and text["loss"]["kld"] == 1e-4
    assert str(tmp_path) not in config.read_text() + (phase / "study_plan.json").read_text()
    protocol = json.loads((phase / "protocol.json").read_text())
    assert len(protocol["sha256"]) == 64 and protocol["code"]["package_sha256"]
    assert protocol["protocol"]["runs"]["phase1_2_AE_V2_vae_light_seed43"]["config"]["training.epochs"] == 3
    assert (
        not list(root.rglob("*.pt")) and not (root / "experiments/phase1_2_AE_V2_vae_light_seed43/config.yaml").exists()
    )


def test_a_written_plan_is_fixed_the_same_plan_again_changes_nothing_another_is_refused(tmp_path):
    root = tmp_path / "study"
    assert write_plan(make_plan(root, seeds=[1]), log=lambda _: None)
    files = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert not write_plan(make_plan(root, seeds=[1]), log=lambda _: None)  # as asked: nothing written
    assert {p: p.stat().st_mtime_ns for p in files} == files
    with pytest.raises(ConfigError) as err:
        write_plan(make_plan(root, seeds=[1], settings={"training.epochs": 2}), log=lambda _: None)
    assert "holds another plan" in str(err.value) and "training.epochs: 10 -> 2" in str(err.value)
    assert "plan into another output root" in str(err.value)
    done = _run("plan", "--out", str(root), "--seeds", "1,2")
    assert done.returncode == 2 and "seeds: [1] -> [1, 2]" in done.stderr and "Traceback" not in done.stderr
    assert {p: p.stat().st_mtime_ns for p in files} == files  # nothing written is damaged


def test_jobs_starting_together_write_one_plan(tmp_path):
    """Array elements (or two single-run jobs) that start together on a study with no plan must not
    race: both ask for the same plan; one writes it, the other finds it written."""
    root = tmp_path / "study"
    command = [sys.executable, "-m", "imginav_core", "plan", "--out", str(root), "--seeds", "5"]
    processes = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate()[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert sum("study plan written" in o for o in outputs) == 1
    assert sum("planned already" in o for o in outputs) == 2
    assert len(read_plan(root).runs) == 2


def test_the_written_plan_reads_back_also_from_a_copy_of_the_study(tmp_path):
    root = tmp_path / "study"
    write_plan(make_plan(root, seeds=[7], settings={"data.resolution": 64}), log=lambda _: None)
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copy)  # as `cp -r` does: new file times
    shutil.rmtree(root)
    plan = read_plan(copy)
    assert plan.root == copy.resolve() and plan.outputs.phase_dir == copy.resolve() / "phase1_2_vae_test"
    assert {c.output_root for c in plan.configs.values()} == {str(copy.resolve())}
    assert {c.data.resolution for c in plan.configs.values()} == {64}
    assert plan.run(2).name == "phase1_2_AE_V2_vae_light_seed7"


def test_without_a_plan_reading_one_says_how_to_write_it(tmp_path):
    assert find_plan(tmp_path) is None
    with pytest.raises(
        ConfigError, match=r"no study plan under .*: plan the study first \(python -m imginav_core plan"
    ):
        read_plan(tmp_path)


def test_a_plan_recorded_by_earlier_code_still_reads(tmp_path):
    """The plan earlier code recorded (`plan --record`: no format, no planned configs, arms without
    queues): its runs read back, with no configs (so no protocol: the decision says "not pre-registered")."""
    phase = tmp_path / "phase1_2_vae_test"
    phase.mkdir()
    runs = [
        {"index": i, "arm": arm, "config": f"configs/phase1_2/{c}", "seed": 42, "kld": k, "name": n, "sweep": False}
        for i, (arm, c, k, n) in enumerate(
            [
                ("V1", "V1_deterministic.yaml", 0.0, "phase1_2_AE_V1_deterministic_seed42"),
                ("V2", "V2_vae_light.yaml", 1e-4, "phase1_2_AE_V2_vae_light_seed42"),
            ],
            start=1,
        )
    ]
    old_text = STUDY.read_text().replace(", queue: gpuv100", "").replace(", queue: gpul40s", "")
    record = {"seeds": [42], "sweep": False, "study_file": "configs/phase1_2/study.yaml", "study": {}}
    (phase / "study_plan.json").write_text(json.dumps(record | {"study_text": old_text, "runs": runs}))
    plan = read_plan(tmp_path)
    assert plan.format == 1 and plan.configs == {} and plan.arm_names("V2") == ["phase1_2_AE_V2_vae_light_seed42"]


@pytest.mark.parametrize(
    "text,message",
    [
        (f"{ARM}{DECISION}seeds: [1]\nseed: 2\n", "expected a mapping with the keys"),
        (f"{ARM}{DECISION}", "missing key 'seeds'"),
        (f"{ARM}seeds: [1]\n", "missing key 'decision'"),
        (f"{ARM}decision: [V1, V1]\nseeds: [1]\n", "'decision' = ['V1', 'V1']"),
        (f"{ARM}{DECISION}seeds: [1]\nkld_sweep: [1.0e-3]\nsweep_arm: V9\n", "'sweep_arm' = 'V9'"),
        (f"{ARM}{DECISION}seeds: [1, 1]\n", "each seed once"),
        (
            f"{ARM}{DECISION}seeds: [1]\nkld_sweep: [1.0e-3]\nsweep_arm: V1\n",
            "a KL weight needs a variational encoder",
        ),
        (f"{ARM.replace('V1_deterministic', 'missing')}{DECISION}seeds: [1]\n", "config file not found"),
        (f"arms:\n  V1: V1_deterministic.yaml\n{DECISION}seeds: [1]\n", "'arms.V1' = 'V1_deterministic.yaml'"),
        (f"{ARM.replace('#377eb8', 'blue')}{DECISION}seeds: [1]\n", "'arms.V1.colour' = 'blue'"),
        (f"{ARM.replace(', queue: gpuv100', '')}{DECISION}seeds: [1]\n", "arm(s) V1 name no queue"),
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
        make_plan(tmp_path / "out", study, sweep="sweep_arm" in text)
    assert message in str(err.value)
    assert str(study) in str(err.value) or "variational" in message


def test_a_run_outside_the_plan_is_refused_saying_the_range(tmp_path):
    plan = make_plan(tmp_path)
    with pytest.raises(ConfigError, match=r"array index 11 is not in the study plan .*: it has runs 1\.\.10"):
        plan.run(11)
    assert plan.run(10).name == "phase1_2_AE_V2_vae_light_seed46"
    assert index_ranges([9, 1, 2, 3, 5, 6]) == "1-3,5-6,9"
    assert read_study_file().sweep_arm == "V2"


def test_plan_show_and_arrays_read_the_written_plan(tmp_path):
    root = tmp_path / "study"
    assert _run("plan", "--out", str(root), "--seeds", "7", "--sweep").returncode == 0
    shown = _run("plan", "--show", env={"IMGINAV_OUTPUTS": str(root)})
    assert shown.returncode == 0 and "| 6 | V2 | phase1_2_AE_V2_vae_light_kld0.1_seed7 | 7 |" in shown.stdout
    assert "The KL sweep: 4 runs more (V2 at KL weights 1e-05, 0.001, 0.01, 0.1 x 1 seed;" in shown.stdout
    assert _run("plan", "--arrays", "--out", str(root)).stdout.split("\n")[:2] == ["V1 1 gpuv100", "V2 2-6 gpul40s"]
    assert _run("plan", "--arrays", "--pending", "--out", str(root)).stdout.startswith("V1 1 gpuv100")  # none trained
    refused = _run("plan", "--show", "--seeds", "3", "--out", str(root))
    assert refused.returncode == 2 and "give no settings with them" in refused.stderr
    dry = tmp_path / "dry"
    assert _run("plan", "--dry-run", "--out", str(dry)).returncode == 0 and not dry.exists()


def test_the_demo_plans_its_study_before_it_trains(tmp_path):
    """make demo runs hpc/demo.sh: its settings are plan options, written before the first run."""
    text = (ROOT / "hpc/demo.sh").read_text()
    plan_line = text.index("python -m imginav_core plan")
    assert plan_line < text.index("hpc/phase1_2_array.sh") < text.index("hpc/diffusion_probe.sh")
    assert "IMGINAV_EPOCHS" not in text and "IMGINAV_SET_" not in text  # no setting from the environment
