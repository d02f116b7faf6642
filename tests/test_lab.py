"""`make lab`: JupyterLab on the notebooks, with the demo's outputs as their default output root."""

import subprocess

import pytest
from helpers import ROOT, V1

from imginav_core.study.parameters import (
    ANALYSIS,
    PROBE,
    TRAIN,
    analysis_parameters,
    default_output_root,
    probe_parameters,
    training_config,
)


def test_the_output_root_defaults_to_imginav_outputs_where_set():
    assert default_output_root({}) == "outputs"
    assert default_output_root({"IMGINAV_OUTPUTS": ""}) == "outputs"  # set but empty: the default, as the jobs read it
    assert default_output_root({"IMGINAV_OUTPUTS": "outputs/demo"}) == "outputs/demo"
    for notebook in (TRAIN, ANALYSIS, PROBE):  # the parameters cells hold None: "the variable's, else outputs"
        assert notebook["output_root"].default is None


@pytest.mark.parametrize("value, expected", [("outputs/demo", ROOT / "outputs/demo"), ("", ROOT / "outputs")])
def test_every_notebook_opens_on_the_output_root_the_environment_names(monkeypatch, value, expected):
    monkeypatch.setenv("IMGINAV_OUTPUTS", value)
    runs = {"experiment_v1": "a", "experiment_v2": "b"}
    assert analysis_parameters(output_root=None, **runs)["output_root"] == expected
    assert probe_parameters(output_root=None, experiments="a,b")[0].root == expected
    assert training_config(str(V1), output_root=None).output_root == str(expected)
    assert training_config(str(V1)).output_root == str(expected)  # not given: the parameters cell's None
    # a value given is the value, whatever the environment
    assert analysis_parameters(output_root="elsewhere", **runs)["output_root"] == ROOT / "elsewhere"


def test_make_lab_starts_jupyterlab_on_the_notebooks_with_the_demos_outputs_and_says_how_to_open_it():
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", "venv", "-o", ".venv/.installed", "lab", "OUTPUTS=outputs/other"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    command = done.stdout.strip().splitlines()[-1]
    assert command.startswith("IMGINAV_OUTPUTS=outputs/other ") and "jupyter lab --notebook-dir=notebooks" in command
    said = done.stdout.lower()
    assert "?token=" in said and "outputs/other" in said  # where to look for the address, which study


def test_the_demo_records_its_plan_before_it_trains_so_its_output_root_alone_names_its_runs():
    """make demo (hpc/demo.sh) records the plan it runs under its output root, as the launcher does:
    the analysis notebook opened on outputs/demo (make lab) takes the demo's 2 seeds from it,
    not the default plan's 5 (tests/test_study_plan.py checks what a recorded plan gives)."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "hpc/demo.sh").read_text().splitlines()]
    commands = [line for line in lines if line]
    record = next(i for i, c in enumerate(commands) if "imginav_core plan --from-env --record" in c)
    first_run = next(i for i, c in enumerate(commands) if "hpc/phase1_2_array.sh" in c)
    assert record < first_run
