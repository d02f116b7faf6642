"""The one command line, the one list of notebook parameters, the one list of output paths."""

import ast
import os
import re
import shlex
import subprocess
import sys

import papermill
import pytest
import yaml
from helpers import PHASE, ROOT, TINY_MODEL, V1, V1_NAME, V2, V2_NAME

from imginav_core.__main__ import build_parser, main
from imginav_core.config import load_config, parse_overrides, schema_keys
from imginav_core.errors import ConfigError
from imginav_core.outputs import Outputs, shown_path
from imginav_core.study.parameters import (
    ANALYSIS,
    PROBE,
    TRAIN,
    papermill_value,
    set_variable,
    settings_table,
    training_config,
    variable_key,
)

COMMANDS = [
    "train",
    "check",
    "plan",
    "probe",
    "score-layouts",
    "stage",
    "synthetic",
    "parameters",
    "bench",
    "phase-timing",
    "fetch-widgets",
]


def _run(*args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "imginav_core", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
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


# The checks every job and the launcher run first, as they run them; the probe's and the analysis's
# without --parameters-only find no run here, so they stop naming it (status 2).
CHECKS = [
    (["check", "train", "--from-env", "-p", "config", str(V2)], 0),
    (["check", "run", "--from-env", "--index", "1"], 0),
    (["check", "run", "--from-env"], 0),
    (["check", "probe", "--from-env", "--parameters-only"], 0),
    (["check", "analysis", "--from-env", "--parameters-only"], 0),
    (["check", "probe", "--from-env"], 2),
    (["check", "analysis", "--from-env"], 2),
]


def test_check_answers_without_importing_torch(tmp_path):
    """`check` runs first in every LSF job, in the launcher on a login node and in many tests: it
    reads parameters and files, never a network, so it must not pay for importing torch."""
    code = (
        "import contextlib, io, sys\nfrom imginav_core.__main__ import main\n"
        f"for argv, _ in {CHECKS!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n        status = main(argv)\n"
        "    print(status, 'torch' in sys.modules, ' '.join(argv[:2]))\n"
    )
    env = {**os.environ, "IMGINAV_OUTPUTS": str(tmp_path), "IMGINAV_HTML_MANAGER": str(tmp_path / "manager.tgz")}
    (tmp_path / "manager.tgz").write_bytes(b"")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    lines = [line.split(" ", 2) for line in done.stdout.splitlines()]
    assert [(status, command) for status, _, command in lines] == [(str(s), " ".join(a[:2])) for a, s in CHECKS]
    assert [torch for _, torch, _ in lines] == ["False"] * len(CHECKS), done.stdout
    assert "no metrics for experiment" in done.stderr  # the probe's and the analysis's checks named the run


def test_check_reads_finished_runs_and_the_probe_without_importing_torch(tiny_runs, tmp_path):
    """Once the runs have trained, the probe's and the analysis's checks read them (their metrics
    and configuration) and the analysis's reads the probe's results, still without torch."""
    import shutil

    from imginav_core.outputs import Outputs

    root = tmp_path / "outputs"
    shutil.copytree(tiny_runs, root)
    out = Outputs(root, PHASE)
    out.probe_notebook.parent.mkdir(parents=True, exist_ok=True)
    out.probe_notebook.write_text("{}")  # the probe ran, but wrote no metrics
    (tmp_path / "manager.tgz").write_bytes(b"")
    env = {
        **os.environ,
        "IMGINAV_OUTPUTS": str(root),
        "IMGINAV_HTML_MANAGER": str(tmp_path / "manager.tgz"),
        "IMGINAV_PROBE_EXPERIMENTS": f"{V1_NAME},{V2_NAME}",
        "IMGINAV_EXPERIMENT_V1": V1_NAME,
        "IMGINAV_EXPERIMENT_V2": V2_NAME,
    }
    code = (
        "import contextlib, io, sys\nfrom imginav_core.__main__ import main\n"
        "for notebook in ('probe', 'analysis'):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        status = main(['check', notebook, '--from-env'])\n"
        "    print(notebook, status, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    # the runs are finished: the probe may start; the analysis stops at the missing probe metrics
    assert done.stdout.splitlines() == ["probe 0 False", "analysis 2 False"], done.stdout + done.stderr
    assert "the diffusion probe has not written" in done.stderr, done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_help_text_and_an_example(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert sub.description and "example:" in sub.epilog and f"python -m imginav_core {command}" in sub.epilog


def test_the_installed_console_script_is_the_same_command_line():
    script = os.path.join(os.path.dirname(sys.executable), "imginav")
    done = subprocess.run([script, "parameters"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == settings_table()


def test_the_settings_page_is_the_parameter_list():
    """The book's settings table is generated from imginav_core/study/parameters.py, never typed by hand."""
    assert settings_table() in (ROOT / "book" / "using" / "settings.md").read_text()
    assert _run("parameters").stdout == settings_table()


@pytest.mark.parametrize("notebook", [TRAIN, ANALYSIS, PROBE], ids=["train", "analysis", "probe"])
def test_the_notebooks_parameters_cells_agree_with_the_list(notebook):
    cell = papermill.inspect_notebook(str(ROOT / notebook.path))
    assert list(cell) == notebook.names
    for parameter in notebook.parameters:
        assert ast.literal_eval(cell[parameter.name]["default"]) == parameter.default, parameter.name


def test_check_gives_the_job_its_papermill_parameters_from_the_environment(tmp_path):
    env = {"IMGINAV_EPOCHS": "3", "IMGINAV_LR": "3e-4", "IMGINAV_OUTPUTS": str(tmp_path), "IMGINAV_DATA": ""}
    done = _run("check", "train", "--from-env", "-p", "config", str(V2), env=env)
    assert done.returncode == 0, done.stderr
    settings = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert settings["NAME"] == "phase1_2_AE_V2_vae_light"
    assert shlex.split(settings["NOTEBOOK"]) == [str(tmp_path / PHASE / "runs" / "phase1_2_AE_V2_vae_light.ipynb")]
    params = shlex.split(settings["PARAMS"].strip("()"))
    pairs = dict(zip(params[1::3], params[2::3]))
    assert params[0::3] == ["-p"] * len(pairs)
    assert pairs == {"epochs": "3", "lr": "3e-4", "output_root": str(tmp_path), "manifest": "", "config": str(V2)}
    # what the notebook will train with exactly these parameters
    cfg = training_config(**TRAIN.from_strings(pairs))
    assert (cfg.training.epochs, cfg.training.lr, cfg.data.manifest) == (3, 3e-4, "")


def _settings(stdout: str) -> tuple[dict[str, str], dict[str, str]]:
    """`check`'s shell assignments, and its PARAMS as name: value."""
    settings = dict(line.split("=", 1) for line in stdout.splitlines())
    params = shlex.split(settings["PARAMS"].strip("()"))
    return settings, dict(zip(params[1::3], params[2::3]))


def test_check_run_gives_an_array_element_its_planned_run(tmp_path):
    env = {"IMGINAV_SEEDS": "42,43", "IMGINAV_KLD_SWEEP": "1", "IMGINAV_EPOCHS": "3", "IMGINAV_OUTPUTS": str(tmp_path)}
    done = _run("check", "run", "--from-env", "--index", "7", env=env)  # V2, KL weight 1e-3, seed 42
    assert done.returncode == 0, done.stderr
    settings, pairs = _settings(done.stdout)
    name = "phase1_2_AE_V2_vae_light_kld0.001_seed42"
    assert (settings["INDEX"], settings["ARM"], settings["SEED"], settings["NAME"]) == ("7", "V2", "42", name)
    assert shlex.split(settings["RUN_DIR"]) == [str(tmp_path / "experiments" / name)]
    assert pairs == {
        "config": "configs/phase1_2/V2_vae_light.yaml",
        "name": name,
        "seed": "42",
        "kld": "0.001",
        "epochs": "3",
        "output_root": str(tmp_path),
    }
    cfg = training_config(**TRAIN.from_strings(pairs))  # what the notebook trains with these parameters
    assert (cfg.name, cfg.training.seed, cfg.loss.kld, cfg.training.epochs) == (name, 42, 1e-3, 3)
    every = _run("check", "run", "--from-env", env=env)  # the launcher's check: every run
    assert every.returncode == 0 and "RUNS=12" in every.stdout.splitlines()  # 2 seeds x (2 arms + 4 sweep weights)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args,env,message",
    [
        (["--index", "11"], {}, "array index 11 is not in the study plan: it has runs 1..10"),
        (["--index", "0"], {}, "array index 0 is not in the study plan"),
        (["--index", "1", "-p", "seed", "3"], {}, "-p seed: the study plan sets each run's seed"),
        (["--index", "1"], {"IMGINAV_SEED": "3"}, "IMGINAV_SEED=3: the study plan sets each run's seed"),
        (["--index", "1"], {"IMGINAV_SEEDS": "x"}, "IMGINAV_SEEDS = 'x'"),
        (["--index", "1"], {"IMGINAV_SET_TRAINING__SEED": "3"}, "overrides set 'training.seed'"),
    ],
)
def test_check_run_refuses_what_the_plan_cannot_run(tmp_path, args, env, message):
    done = _run("check", "run", "--from-env", *args, env={**env, "IMGINAV_OUTPUTS": str(tmp_path)})
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_plan_says_how_many_seeds_a_difference_needs_and_what_they_cost():
    done = _run("plan", "--effect", "2", "--spread", "1")
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    seeds = [int(row[0].strip("| ")) for row in rows]
    powers = [int(row[1].rstrip(" %")) for row in rows]
    assert seeds[:7] == list(range(2, 9)) and powers == sorted(powers)  # more seeds, more power
    needed = next(s for s, p in zip(seeds, powers, strict=True) if p >= 80)
    assert f"Needed: {needed} seeds per arm, {2 * needed} runs" in done.stdout
    assert powers[seeds.index(3)] < 50  # the old default of 3 seeds: a coin toss at best
    for row, n in zip(rows, seeds, strict=True):  # 2 arms x n runs x 10 epochs x 27,897 layouts at 80..40 images/s
        low, high = (2 * n * 10 * 27_897 / rate / 3600 for rate in (80, 40))
        assert int(row[3]) == 2 * n and row[4].strip(" |") == f"{low:.0f}-{high:.0f}"
    assert "1.0-1.9 GPU-hours" in done.stdout and "40-80 images/s" in done.stdout
    # only the difference in spreads matters
    scaled = _run("plan", "--effect", "6", "--spread", "3")
    assert f"Needed: {needed} seeds per arm" in scaled.stdout
    assert "--effect E" in _run("plan", "--help").stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--effect", "0"], "expected a difference to detect"),
        (["--effect", "1", "--spread", "-1"], "standard deviation within an arm (> 0)"),
        (["--effect", "1", "--seeds", "1,2"], "--effect plans how many seeds"),
        (["--effect", "1", "--power", "1.5"], "--power 1.5"),
    ],
)
def test_plan_refuses_an_impossible_power_question(args, message):
    done = _run("plan", *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("how", ["--set", "-p"])
def test_a_kl_weight_typed_1e_3_is_the_float_in_the_runs_saved_config(tmp_path, one_thread, how):
    """`--set loss.kld=1e-3` (YAML 1.1 would read a string) and `-p kld 1e-3` (papermill's typing,
    the LSF jobs' torchrun call) both train with, and save, 0.001."""
    tiny = [
        arg
        for key, value in {
            **TINY_MODEL,
            "data.resolution": 16,
            "data.synthetic_samples": 48,  # about 6 apartments: enough groups for train, val and test
            "training.epochs": 1,
            "training.batch_size": 8,
            "data.num_workers": 0,
            "training.device": "cpu",
            "output_root": str(tmp_path),
        }.items()
        for arg in ("--set", f"{key}={value}")
    ]
    weight = ["--set", "loss.kld=1e-3"] if how == "--set" else ["-p", "kld", "1e-3"]
    assert main(["train", str(V2), *weight, *tiny]) == 0
    saved = (tmp_path / "experiments" / "phase1_2_AE_V2_vae_light" / "config.yaml").read_text()
    kld = yaml.safe_load(saved)["loss"]["kld"]
    assert kld == 0.001 and isinstance(kld, float)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"IMGINAV_EPOCHS": "ten"}, "IMGINAV_EPOCHS: notebook parameter 'epochs' = 'ten': expected int"),
        ({"IMGINAV_KLD": "1e-3"}, "'loss.kld' = 0.001: a KL weight needs a variational encoder"),
        ({"IMGINAV_DEVICE": "tpu"}, "'training.device' = 'tpu' is not one of"),
    ],
)
def test_check_refuses_a_bad_parameter_naming_it(env, message, tmp_path):
    done = _run("check", "train", "--from-env", "-p", "config", str(V1), env={**env, "IMGINAV_OUTPUTS": str(tmp_path)})
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_without_npm_a_job_stops_before_training_not_after(tmp_path, monkeypatch, capsys):
    """The report's widget script comes from npm: a node without it must fail at the start."""
    from imginav_core.study.analysis import report

    monkeypatch.setattr(report, "BOOK", tmp_path / "book")  # nothing staged there
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    monkeypatch.delenv("IMGINAV_HTML_MANAGER", raising=False)
    assert main(["check", "train", "-p", "config", str(V1), "-p", "output_root", str(tmp_path / "o")]) == 2
    assert "npm is not installed" in capsys.readouterr().err
    monkeypatch.setenv("IMGINAV_HTML_MANAGER", str(tmp_path / "missing.tgz"))
    assert main(["check", "train", "-p", "config", str(V1)]) == 2
    assert "missing.tgz: no such file" in capsys.readouterr().err
    (tmp_path / "html-manager.tgz").write_bytes(b"")
    monkeypatch.setenv("IMGINAV_HTML_MANAGER", str(tmp_path / "html-manager.tgz"))
    assert main(["check", "train", "-p", "config", str(V1)]) == 0
    assert not (tmp_path / "o").exists()


def test_train_with_a_config_file_keeps_its_values_and_with_p_config_the_notebooks(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text(f"inherit: {V1}\ndata:\n  manifest: {tmp_path / 'layouts.csv'}\ntraining:\n  device: cpu\n")
    as_file = training_config(str(own), notebook_defaults=False, epochs=1)
    assert as_file.data.manifest == str(tmp_path / "layouts.csv") and as_file.training.device == "cpu"
    as_notebook = training_config(str(own), epochs=1)  # the notebook's defaults: synthetic, auto
    assert as_notebook.data.manifest == "" and as_notebook.training.device == "auto"


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


def test_paths_are_shown_relative_to_the_output_root_never_as_this_machines(tmp_path):
    out = Outputs(tmp_path, PHASE)
    assert out.shown(out.decision) == f"OUTPUT_ROOT/{PHASE}/decision.json"
    assert out.shown(tmp_path) == "OUTPUT_ROOT"
    elsewhere = shown_path("/data/user/set/layouts.csv", tmp_path)
    assert elsewhere == ".../user/set/layouts.csv" and "/data" not in elsewhere
    assert shown_path("relative/layouts.csv") == "relative/layouts.csv"


def test_an_empty_variable_means_the_default_except_where_the_default_is_empty(tmp_path):
    """IMGINAV_OUTPUTS= (set but empty) is the default output root, not the repository root;
    IMGINAV_DATA= is the manifest's own default, "", the synthetic layouts."""
    given = TRAIN.from_environment({"IMGINAV_OUTPUTS": "", "IMGINAV_EPOCHS": "", "IMGINAV_DATA": ""})
    assert given == {"manifest": ""}
    cfg = training_config(str(V1), **TRAIN.from_strings(given))
    assert cfg.output_root == str(ROOT / "outputs") and cfg.data.manifest == ""


def test_every_config_key_has_one_job_variable_named_by_a_rule():
    """IMGINAV_SET_ + the key in capitals, '.' as '__': read back, each variable gives its key."""
    variables = [set_variable(key) for key in schema_keys()]
    assert len(set(variables)) == len(variables) > 30
    assert [variable_key(v) for v in variables] == schema_keys()
    assert variable_key("IMGINAV_SET_TRAINING__EARLY_STOPPING__PATIENCE") == "training.early_stopping.patience"
    with pytest.raises(ConfigError, match=r"IMGINAV_SET_TRAINING_LR: names no config key .*IMGINAV_SET_TRAINING__LR"):
        variable_key("IMGINAV_SET_TRAINING_LR")  # one underscore: no key


def test_a_job_sets_any_config_key_by_its_variable(tmp_path):
    env = {
        "IMGINAV_OUTPUTS": str(tmp_path),
        "IMGINAV_LR": "2e-4",
        "IMGINAV_SET_TRAINING__WEIGHT_DECAY": "0.05",
        "IMGINAV_SET_DATA__NUM_WORKERS": "3",
        "IMGINAV_SET_TRAINING__EARLY_STOPPING__PATIENCE": "",  # empty: not set, as the other variables
    }
    done = _run("check", "train", "--from-env", "-p", "config", str(V1), "-p", "overrides", "{loss.mse: 2}", env=env)
    assert done.returncode == 0, done.stderr
    _, pairs = _settings(done.stdout)
    cfg = training_config(**TRAIN.from_strings(pairs))  # what the notebook trains with these -p parameters
    assert (cfg.training.lr, cfg.training.weight_decay, cfg.data.num_workers, cfg.loss.mse) == (2e-4, 0.05, 3, 2)
    assert cfg.training.early_stopping.patience == load_config(V1).training.early_stopping.patience
    both = _run("check", "train", "--from-env", "-p", "config", str(V1), env={**env, "IMGINAV_SET_TRAINING__LR": "1"})
    assert both.returncode == 2 and "IMGINAV_LR and IMGINAV_SET_TRAINING__LR both set 'training.lr'" in both.stderr
    typo = _run("check", "train", "--from-env", "-p", "config", str(V1), env={**env, "IMGINAV_SET_TRAINING__LRR": "1"})
    assert typo.returncode == 2 and "IMGINAV_SET_TRAINING__LRR: names no config key" in typo.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"training.lr": 3e-4, "data.num_workers": 2},
        ["training.lr=3e-4", "data.num_workers=2"],
        "{training.lr: 3e-4, data.num_workers: 2}",  # -p text: read as YAML
        '["training.lr=3e-4", "data.num_workers=2"]',
    ],
    ids=["mapping", "list", "yaml-mapping-text", "yaml-list-text"],
)
def test_the_notebooks_overrides_are_read_as_set_reads_them_after_the_named_parameters(overrides):
    expected = load_config(V1, parse_overrides(["training.lr=3e-4", "data.num_workers=2"]))
    cfg = training_config(str(V1), overrides=overrides, lr=1.0)  # the named lr first, the override last
    assert cfg.to_dict() == {**expected.to_dict(), "output_root": cfg.output_root}
    assert training_config(str(V1), overrides="training.epochs=3").training.epochs == 3  # one pair alone


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"training.lrr": 1}, "unknown override key 'training.lrr' (did you mean 'training.lr'?)"),
        (["training.lr"], "'training.lr': expected key=value"),
        (["training.lr=1", 5], "5: expected a 'key=value' string"),
        (5, "notebook parameter 'overrides' = 5: expected a mapping of config keys or a list"),
    ],
)
def test_a_bad_override_is_refused_naming_it(overrides, message):
    with pytest.raises(ConfigError) as err:
        training_config(str(V1), overrides=overrides)
    assert message in str(err.value)


def test_p_values_are_typed_as_papermill_types_them():
    """``check`` types -p text with a copy of papermill's rule (see papermill_value for why a
    copy): the two agree, tricky cases included, or a new papermill fails here."""
    from papermill.cli import _resolve_type

    texts = ["True", "true", "None", "none", "0", "-0", "1_000", "0x10", " 5", "１２", "1e-3", "3E-4", "1.", ".5"]
    texts += ["nan", "inf", "-Infinity", "1e400", "", "configs/x.yaml", "[1, 2]", "{a: 1}", "kld0.001_seed42"]
    for text in texts:
        mine, theirs = papermill_value(text), _resolve_type(text)
        assert type(mine) is type(theirs) and (mine == theirs or mine != mine and theirs != theirs), text
