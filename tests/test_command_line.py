"""The one command line, the one way in for a setting (the plan), the one list of output paths."""

import json
import os
import re
import subprocess
import sys

import papermill
import pytest
import yaml
from helpers import PHASE, ROOT, TINY_MODEL, V1_NAME

from imginav_core.__main__ import build_parser, main
from imginav_core.errors import ConfigError
from imginav_core.outputs import Outputs, shown_path
from imginav_core.study.jobs import JOB_VARIABLES, check_environment
from imginav_core.study.jobscripts import job_scripts
from imginav_core.study.plan import make_plan, write_plan
from imginav_core.study.settings import settings_table

COMMANDS = [
    "plan",
    "train",
    "job",
    "job-scripts",
    "probe",
    "score-layouts",
    "stage",
    "synthetic",
    "settings",
    "bench",
    "fetch-widgets",
]


def _run(*args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "imginav_core", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("IMGINAV_")}, **(env or {})},
        **kwargs,
    )


def test_help_answers_without_importing_torch():
    code = (
        "import sys\nfrom imginav_core.__main__ import main\n"
        f"for argv in [['--help']] + [[c, '--help'] for c in {COMMANDS!r}]:\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout
    for command in COMMANDS:
        assert f"python -m imginav_core {command}" in done.stdout, command  # each has an example


def test_planning_and_checking_a_study_import_no_torch(tmp_path):
    """The launcher plans and checks on a login node: reading configs and writing files, never torch."""
    code = (
        "import contextlib, io, sys\nfrom imginav_core.__main__ import main\n"
        f"argv = [['plan', '--out', {str(tmp_path)!r}, '--seeds', '1,2'], ['plan', '--arrays'], ['job', 'check']]\n"
        "for args in argv:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n        status = main(args)\n"
        "    print(status, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "IMGINAV_OUTPUTS": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["0 False"] * 3, done.stdout + done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_help_text_and_an_example(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert sub.description and "example:" in sub.epilog and f"python -m imginav_core {command}" in sub.epilog


def test_the_installed_console_script_is_the_same_command_line():
    script = os.path.join(os.path.dirname(sys.executable), "imginav")
    done = subprocess.run([script, "settings"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == settings_table()


def test_the_settings_page_is_the_settings_table():
    """The book's settings table is generated from the configs and the settings records, never typed
    by hand; every setting there is a plan key with its default and its meaning."""
    assert settings_table() in (ROOT / "book" / "using" / "settings.md").read_text()
    table = settings_table()
    for key in ("training.lr", "data.manifest", "probe.steps", "analysis.max_images"):
        assert f"| `{key}` |" in table
    assert "| `loss.kld` | V1 `0.0`, V2 `0.0001` |" in table  # where the arms differ, each arm's
    assert "| `training.seed` |" not in table  # the plan sets it (--seeds)


@pytest.mark.parametrize(
    "notebook, parameters",
    [
        ("train", ["config", "variant"]),
        ("diffusion_probe", ["output_root", "job"]),
        ("analysis", ["output_root", "job", "allow_unfinished", "allow_no_probe"]),
    ],
)
def test_the_notebooks_take_what_to_look_at_and_no_setting(notebook, parameters):
    """A notebook's parameters name the study or the run, and for the jobs whether to write: no
    parameter mirrors a setting (those are the plan's)."""
    cell = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"))
    assert list(cell) == parameters
    assert all(p["default"] in ("None", "False") for p in cell.values())


@pytest.mark.parametrize(
    "variable, hint",
    [
        ("IMGINAV_EPOCHS", "plan --set training.epochs=N"),
        ("IMGINAV_SET_TRAINING__LR", "plan --set training.lr=VALUE"),
        ("IMGINAV_SEEDS", "plan --seeds 42,43"),
        ("IMGINAV_KLD_SWEEP", "plan --sweep"),
        ("IMGINAV_PROBE_STEPS", "plan --set probe.steps=N"),
        ("IMGINAV_OUTPUT", "plan --set KEY=VALUE"),  # a typo of IMGINAV_OUTPUTS: not taken silently
    ],
)
def test_a_setting_variable_stops_a_job_at_once_naming_plan_set(tmp_path, variable, hint):
    write_plan(make_plan(tmp_path, seeds=[1]), log=lambda _: None)
    before = sorted(p for p in tmp_path.rglob("*"))
    for args in (["job", "train", "--index", "1"], ["job", "probe"], ["job", "analysis"], ["job", "check"]):
        done = _run(*args, env={"IMGINAV_OUTPUTS": str(tmp_path), variable: "3"})
        assert done.returncode == 2, (args, done.stdout + done.stderr)
        assert f"{variable} is set, and a job takes no setting from its environment" in done.stderr
        assert hint in done.stderr and "Traceback" not in done.stderr
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written
    check_environment({name: "x" for name in JOB_VARIABLES})  # what a job may take, it takes


def test_a_kl_weight_typed_1e_3_is_the_float_in_the_planned_and_the_trained_config(tmp_path, one_thread):
    """`--set loss.kld=1e-3` (YAML 1.1 would read a string) plans and trains with 0.001."""
    tiny = [a for k, v in TINY_MODEL.items() for a in ("--set", f"{k}={v}")] + [
        *("--set", "data.resolution=16", "--set", "data.synthetic_samples=48", "--set", "training.epochs=1"),
        *("--set", "training.batch_size=8", "--set", "data.num_workers=0", "--set", "training.device=cpu"),
    ]
    study = tmp_path / "study.yaml"
    study.write_text(
        (ROOT / "configs/phase1_2/study.yaml")
        .read_text()
        .replace("config: V1_deterministic.yaml", f"config: {ROOT}/configs/phase1_2/V2_vae_light.yaml")
        .replace("config: V2_vae_light.yaml", f"config: {ROOT}/configs/phase1_2/V2_vae_light.yaml")
    )
    root = tmp_path / "out"
    assert main(["plan", "--out", str(root), "--seeds", "1", "--set", "loss.kld=1e-3", *tiny]) == 2  # V1 cannot take it
    assert not root.exists()
    assert (
        main(["plan", "--out", str(root), "--study", str(study), "--seeds", "1", "--set", "loss.kld=1e-3", *tiny]) == 0
    )
    planned = root / "experiments" / "phase1_2_AE_V2_vae_light_seed1" / "planned.yaml"
    assert yaml.safe_load(planned.read_text())["loss"]["kld"] == 0.001
    assert main(["train", str(planned)]) == 0
    saved = yaml.safe_load((planned.parent / "config.yaml").read_text())["loss"]["kld"]
    assert saved == 0.001 and isinstance(saved, float)


def test_the_job_scripts_are_what_the_study_file_makes_of_them():
    """LSF reads #BSUB lines before a script runs, so the per-arm scripts are written from
    study.yaml; `job-scripts --check` fails when one drifts from it."""
    assert _run("job-scripts", "--check").returncode == 0
    for path, text in job_scripts().items():
        assert path.read_text() == text, path
    arms = yaml.safe_load((ROOT / "configs/phase1_2/study.yaml").read_text())["arms"]
    for label, arm in arms.items():
        text = (ROOT / f"hpc/papermill_{label}.sh").read_text()
        assert f"#BSUB -J phase1_2_{label}\n#BSUB -q {arm['queue']}\n" in text
        assert text.rstrip().endswith(f"python -m imginav_core job train --arm {label}")
        assert "eval" not in text


def test_outputs_spell_every_documented_path(tmp_path):
    """The README's outputs table, checked against the one place that spells the names."""
    out = Outputs(tmp_path, PHASE)
    documented = {
        out.metrics_csv(V1_NAME): f"experiments/{V1_NAME}/{V1_NAME}_metrics.csv",
        out.best_checkpoint(V1_NAME): f"experiments/{V1_NAME}/best.pt",
        out.last_checkpoint(V1_NAME): f"experiments/{V1_NAME}/last.pt",
        out.run_config(V1_NAME): f"experiments/{V1_NAME}/config.yaml",
        out.phase_metrics_csv(V1_NAME): f"{PHASE}/{V1_NAME}_metrics.csv",
        out.sample_grid(V1_NAME, 7): f"{PHASE}/samples/{V1_NAME}_epoch_007_comparison.png",
        out.executed_notebook(V1_NAME): f"{PHASE}/runs/{V1_NAME}.ipynb",
        out.analysis_notebook: f"{PHASE}/runs/analysis.ipynb",
        out.latent_metrics: f"{PHASE}/analysis/latent_metrics.json",
        out.decision: f"{PHASE}/decision.json",
        out.next_phase_config: f"{PHASE}/phase1_3_base.yaml",
    }
    readme = (ROOT / "README.md").read_text()
    for path, relative in documented.items():
        assert path == tmp_path / relative
        shape = re.sub(rf"{V1_NAME}", "NAME", relative).replace("007", "NNN").replace(PHASE, "phase1_2_vae_test")
        folder, name = shape.rsplit("/", 1)
        # listed whole, or as one of several names in its folder's row (`folder/a`, `b`)
        assert f"`{shape}`" in readme or (f"`{name}`" in readme and f"`{folder}/" in readme), shape
    for written in ("planned.yaml", "study_plan.json", "protocol.json"):
        assert f"`{written}`" in readme or f"/{written}`" in readme, written


def test_paths_are_shown_relative_to_the_output_root_never_as_this_machines(tmp_path):
    out = Outputs(tmp_path, PHASE)
    assert out.shown(out.decision) == f"OUTPUT_ROOT/{PHASE}/decision.json"
    assert out.shown(tmp_path) == "OUTPUT_ROOT"
    elsewhere = shown_path("/data/user/set/layouts.csv", tmp_path)
    assert elsewhere == ".../user/set/layouts.csv" and "/data" not in elsewhere
    assert shown_path("relative/layouts.csv") == "relative/layouts.csv"


def test_plan_says_how_many_seeds_a_difference_needs_and_what_they_cost():
    done = _run("plan", "--effect", "2", "--spread", "1")
    assert done.returncode == 0, done.stderr
    assert "| seeds per arm | power |" in done.stdout and "Needed: " in done.stdout and "GPU-hours" in done.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--effect", "0"], "expected a difference to detect (not 0)"),
        (["--effect", "1", "--spread", "0"], "the runs' standard deviation within an arm (> 0)"),
        (["--effect", "1", "--seeds", "1,2"], "--effect plans the seeds: give it alone"),
    ],
)
def test_plan_refuses_an_impossible_power_question(args, message):
    done = _run("plan", *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_bad_setting_is_refused_naming_it_and_nothing_is_written(tmp_path):
    for args, message in [
        (["--set", "training.epochs=ten"], "'training.epochs' must be int, got 'ten'"),
        (["--set", "training.device=tpu"], "'training.device' = 'tpu' is not one of"),
        (["--seeds", "1;2"], "--seeds '1;2': expected integer seeds separated by commas"),
        (["--set", "probe.width=30"], "probe setting 'width' = 30: expected a multiple of 8"),
    ]:
        done = _run("plan", "--out", str(tmp_path / "study"), *args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "study").exists()


def test_train_takes_a_planned_config_and_says_when_there_is_none(tmp_path):
    done = _run("train", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "the run's planned config is missing" in done.stderr


def test_the_analysis_job_stops_before_the_notebook_when_the_widget_script_cannot_be_had(tmp_path, monkeypatch, capsys):
    """The report's widget script comes from npm: a node without it must stop at the start."""
    from imginav_core.study.analysis import report

    write_plan(make_plan(tmp_path, seeds=[1]), log=lambda _: None)
    monkeypatch.setattr(report, "BOOK", tmp_path / "book")  # nothing staged there
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    monkeypatch.setenv("IMGINAV_OUTPUTS", str(tmp_path))
    monkeypatch.delenv("IMGINAV_HTML_MANAGER", raising=False)
    assert main(["job", "analysis"]) == 2
    assert "npm is not installed" in capsys.readouterr().err
    monkeypatch.setenv("IMGINAV_HTML_MANAGER", str(tmp_path / "missing.tgz"))
    assert main(["job", "analysis"]) == 2
    assert "missing.tgz: no such file" in capsys.readouterr().err
    assert not Outputs(tmp_path, PHASE).analysis_notebook.exists()


def test_job_train_refuses_what_the_plan_cannot_run(tmp_path):
    env = {"IMGINAV_OUTPUTS": str(tmp_path)}
    done = _run("job", "train", "--index", "1", env=env)
    assert done.returncode == 2 and "no study plan under" in done.stderr  # an array element needs the plan
    write_plan(make_plan(tmp_path, seeds=[1]), log=lambda _: None)
    done = _run("job", "train", "--index", "3", env=env)
    assert done.returncode == 2 and "array index 3 is not in the study plan" in done.stderr
    done = _run("job", "train", "--index", "0", env=env)
    assert done.returncode == 2 and "no array index" in done.stderr
    with pytest.raises(ConfigError):
        check_environment({"IMGINAV_SET_X": "1"})
    assert json.loads((tmp_path / PHASE / "study_plan.json").read_text())["seeds"] == [1]
