"""The cluster side around the jobs: conda activation, the stand-in bsub's rules, array elements
running at once on one output folder, the shell scripts' lint, and `make venv`'s choice of torch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_PLAN, copy_of_repository
from helpers import ROOT

from imginav_core.study.plan import read_plan

BSUB = ROOT / "tests" / "lsf" / "bsub"

# ---- conda activation ------------------------------------------------------------------------


def _fake_conda(root: Path, log: Path) -> Path:
    """A conda installation with one environment, ``imginav``, whose python notes each call in
    ``log`` (and does nothing more: the job's work is another test's). Its conda.sh, like
    conda's own, defines the ``conda`` shell function and reads a variable a batch job leaves
    unset ($PS1): under ``set -u`` that stops the job."""
    base = root / "conda"
    for folder in ("bin", "etc/profile.d", "envs/imginav/bin"):
        (base / folder).mkdir(parents=True)
    scripts = {
        "bin/conda": f'#!/bin/sh\n[ "$1 $2" = "info --base" ] && echo "{base}" && exit 0\nexit 1\n',
        "etc/profile.d/conda.sh": (
            f'export CONDA_EXE="{base}/bin/conda"\n'
            '_CONDA_PS1_BEFORE="$PS1"\n'
            "conda() {\n"
            '  if [ "$1" = activate ] && [ -d "' + str(base) + '/envs/$2" ]; then\n'
            f'    export CONDA_PREFIX="{base}/envs/$2" CONDA_DEFAULT_ENV="$2" PATH="{base}/envs/$2/bin:$PATH"\n'
            '  elif [ "$1" = activate ]; then\n'
            '    echo "EnvironmentNameNotFound: Could not find conda environment: $2" >&2; return 1\n'
            '  else "$CONDA_EXE" "$@"; fi\n'
            "}\n"
        ),
        "envs/imginav/bin/python": f'#!/bin/sh\necho "python $*" >> "{log}"\n',
    }
    for name, text in scripts.items():
        (base / name).write_text(text)
        (base / name).chmod(0o755)
    return base


def _without_conda(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The job's environment on a machine where no conda can be found, plus ``variables``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CONDA", "IMGINAV_"))}
    path = [folder for folder in env["PATH"].split(os.pathsep) if not (Path(folder) / "conda").exists()]
    return {**env, "PATH": os.pathsep.join(path), "IMGINAV_OUTPUTS": str(tmp_path / "out"), **variables}


def _job(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "hpc/papermill_V1.sh"], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("found_by", ["PATH", "CONDA_EXE", "IMGINAV_CONDA_BASE"])
def test_a_job_runs_in_its_conda_environment(tmp_path, found_by):
    """However conda is found, the job activates IMGINAV_CONDA_ENV (default imginav) and runs the
    job with its python, though conda.sh reads an unset variable."""
    log = tmp_path / "calls.log"
    base = _fake_conda(tmp_path, log)
    env = _without_conda(tmp_path)
    if found_by == "PATH":
        env["PATH"] = f"{base / 'bin'}{os.pathsep}{env['PATH']}"
    else:
        env[found_by] = str(base / "bin" / "conda") if found_by == "CONDA_EXE" else str(base)
    done = _job(env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"conda environment imginav activated from {base}" in done.stdout
    assert f"(python: {base}/envs/imginav/bin/python)" in done.stdout
    assert log.read_text().splitlines() == ["python -m imginav_core job train --arm V1"]


@pytest.mark.parametrize(
    "variables,conda,message",
    [
        ({}, False, "conda cannot be found: no conda on the PATH, no $CONDA_EXE, no IMGINAV_CONDA_BASE"),
        ({"IMGINAV_CONDA_ENV": "imginav"}, False, "conda cannot be found"),
        ({"IMGINAV_CONDA_BASE": "/nonexistent/miniconda3"}, False, "is not a conda installation"),
        ({"IMGINAV_CONDA_ENV": "imginva"}, True, "'conda activate imginva' failed"),
    ],
    ids=["default-env-no-conda", "no-conda", "wrong-base", "no-such-environment"],
)
def test_a_job_whose_conda_environment_cannot_be_activated_stops_before_training(tmp_path, variables, conda, message):
    log = tmp_path / "calls.log"
    env = _without_conda(tmp_path, **variables)
    if conda:
        env["IMGINAV_CONDA_BASE"] = str(_fake_conda(tmp_path, log))
    done = _job(env)
    assert done.returncode == 2, done.stdout + done.stderr
    name = variables.get("IMGINAV_CONDA_ENV", "imginav")
    assert f"error: the job runs in the conda environment '{name}' (IMGINAV_CONDA_ENV), but" in done.stderr
    assert message in done.stderr and "IMGINAV_CONDA_ENV= to run with the python on the PATH" in done.stderr
    if conda:
        assert "EnvironmentNameNotFound" in done.stderr  # conda's own message, above
    assert not log.exists() and not (tmp_path / "out").exists()  # nothing ran, nothing written


# ---- the stand-in bsub ---------------------------------------------------------------------


def _bsub(tmp_path: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    job = tmp_path / "job.sh"
    if not job.exists():
        (tmp_path / "logs").mkdir()
        job.write_text(
            '#BSUB -J "runs[1-2]"\n#BSUB -o logs/runs.%J.%I.out\n#BSUB -e logs/runs.%J.%I.err\n'
            "exit $((LSB_JOBINDEX - 1))\n"  # element 1 done, element 2 exits with 1
        )
    env = {**os.environ, "FAKE_LSF_DIR": str(tmp_path / "lsf"), **(env or {})}
    with job.open() as script:
        return subprocess.run(
            [str(BSUB), *options], stdin=script, cwd=tmp_path, env=env, capture_output=True, text=True
        )


@pytest.mark.parametrize(
    "condition,holds",
    [
        ("ended(1001)", True),
        ("done(1001)", False),  # element 2 failed
        ("exit(1001)", False),  # element 1 did not
        ("done(1001[1]) && exit(1001[2], 1)", True),
        ("exit(1001[2], > 1)", False),
        ("!done(1001)", True),
        ("done(1001) || ended(1001)", True),
        ('(done(1001[1]) && ended("runs")) || done(1001)', True),
    ],
)
def test_the_stand_in_bsub_evaluates_dependencies_as_lsf_does(tmp_path, condition, holds):
    assert _bsub(tmp_path).returncode == 0  # job 1001: runs[1] exits 0, runs[2] exits 1
    done = _bsub(tmp_path, "-J", "after", "-w", condition)
    assert (done.returncode == 0) == holds, done.stderr
    if not holds:  # on the cluster the job would wait forever: the test must see it
        assert "never satisfied" in done.stderr


@pytest.mark.parametrize(
    "condition,message",
    [
        ("numended(1001, >= 1)", "does not understand numended(1001, >= 1)"),
        ("started(1001)", "does not understand started(1001)"),
        ("post_done(1001)", "does not understand post_done(1001)"),
        ("ended(run*)", "does not understand the job 'run*'"),
        ("1001", "does not understand '1001'"),
        ("ended(1001) && done(1001) || ended(1001)", "&& and || side by side: add parentheses"),
        ("ended(1001) &&", "incomplete expression"),
        ("(ended(1001)", "a '(' is not closed"),
        ("ended(1999)", "ended(1999): No matching job found"),
    ],
)
def test_the_stand_in_bsub_refuses_a_dependency_it_does_not_understand(tmp_path, condition, message):
    assert _bsub(tmp_path).returncode == 0
    done = _bsub(tmp_path, "-J", "after", "-w", condition)
    assert done.returncode == 255 and message in done.stderr, done.stderr
    assert len((tmp_path / "lsf" / "submissions.tsv").read_text().splitlines()) == 1  # not submitted


@pytest.mark.parametrize(
    "options,message",
    [
        (["-n", "0"], "-n 0: Bad argument"),
        (["-n", "8,4"], "-n 8,4: Bad argument"),
        (["-gpu", "num=1:mode=exclusive"], "Invalid GPU requirement (mode=exclusive)"),
        (["-gpu", "num=0"], "Invalid GPU requirement (num=0)"),
        (["-gpu", "num=1:gpus=2"], "Invalid GPU requirement (gpus)"),
        (["-M", "4 GiB"], "-M 4 GiB: Bad memory limit"),
        (["-W", "4h"], "-W 4h: Bad RUNLIMIT"),
        (["-W", "1:90"], "-W 1:90: Bad RUNLIMIT"),
        (["-u", "a@b.org c@d.org"], "expected one mail address"),
        (["-J", "x", "-q"], "-q: option requires a value"),
    ],
)
def test_the_stand_in_bsub_refuses_malformed_resources(tmp_path, options, message):
    done = _bsub(tmp_path, *options)
    assert done.returncode == 255 and message in done.stderr, done.stderr
    assert not (tmp_path / "lsf" / "submissions.tsv").exists()


def test_the_stand_in_bsub_records_the_resources_it_was_given(tmp_path):
    options = ["-n", "16", "-gpu", "num=4:mode=exclusive_process", "-M", "6GB", "-W", "90", "-u", "a@b.org", "-Ne"]
    assert _bsub(tmp_path, *options).returncode == 0
    (record,) = (tmp_path / "lsf" / "submissions.tsv").read_text().splitlines()
    assert record.split("\t") == ["1001", "runs[1-2]", "normal", "", "16", "num=4:mode=exclusive_process"] + [
        "6GB",
        "90",
        "a@b.org",
        "Ne",
    ]


def test_two_array_elements_train_at_once_into_one_phase_folder(tmp_path):
    """FAKE_LSF_CONCURRENT=1: V1's and V2's runs (one seed) as two elements of one array, trained
    at the same time by the real job script into one output root: they build the synthetic set
    and the decoded cache together and each writes its metrics into the shared phase folder. Both
    finish; each phase-folder copy of the metrics is whole and the same as its run's."""
    repo = copy_of_repository(tmp_path / "repo")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMGINAV_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LSF_DIR": str(tmp_path / "lsf"),
        "FAKE_LSF_CONCURRENT": "1",
        "IMGINAV_OUTPUTS": str(tmp_path / "out"),
        "IMGINAV_CONDA_ENV": "",
    }
    plan_options = [*SMALL_PLAN, "--seeds", "42", "--set", "training.epochs=1"]
    planned = subprocess.run(["python", "-m", "imginav_core", "plan", *plan_options], cwd=repo, env=env)
    assert planned.returncode == 0
    plan = read_plan(tmp_path / "out").runs
    assert [run.arm for run in plan] == ["V1", "V2"]
    with (repo / "hpc" / "phase1_2_array.sh").open() as script:
        done = subprocess.run(
            [str(BSUB), "-J", "phase1_2[1-2]"], stdin=script, cwd=repo, env=env, capture_output=True, text=True
        )
    logs = "".join(p.read_text()[-2000:] for p in sorted((repo / "hpc" / "logs").glob("phase1_2.*")))
    jobs = [line.split("\t") for line in (tmp_path / "lsf" / "jobs.tsv").read_text().splitlines()]
    assert done.returncode == 0 and [(job[0], job[3]) for job in jobs] == [("1001[1]", "0"), ("1001[2]", "0")], logs
    (first, start1, end1), (second, start2, end2) = [
        (label, float(a), float(b))
        for label, a, b in (line.split("\t") for line in (tmp_path / "lsf" / "times.tsv").read_text().splitlines())
    ]
    assert start2 < end1 and start1 < end2  # they ran at the same time
    phase = next((tmp_path / "out").glob("phase1_2_*"))
    for run in plan:
        shared = (phase / f"{run.name}_metrics.csv").read_text()
        assert shared == (tmp_path / "out" / "experiments" / run.name / f"{run.name}_metrics.csv").read_text()
        header, row = shared.splitlines()
        assert row.split(",")[0] == "1" and row.endswith(",completed") and len(row.split(",")) == len(header.split(","))
    assert not list(phase.glob(".*.tmp")) and not list((tmp_path / "out").rglob("*.partial.ipynb"))
    sets = [p for p in (tmp_path / "out" / "synthetic").iterdir() if not p.name.startswith(".")]  # not the lock
    assert len(sets) == 1  # one set, built once


# ---- shell scripts and make venv ----------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)"
)
def test_the_shell_scripts_pass_shellcheck():
    scripts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "hpc").glob("*.sh")) + [".ci/run", ".ci/installed"]
    done = subprocess.run(["shellcheck", *scripts], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_make_venv_takes_torch_from_the_default_index_when_the_cpu_index_cannot_be_reached(tmp_path):
    """No NVIDIA GPU and PyTorch's CPU index out of reach (a closed local port): make says so and
    pip resolves the pinned torch from the default index instead (--dry-run: a real install of
    torch takes over a minute)."""
    venv = tmp_path / "venv"
    unreachable = "http://127.0.0.1:9/whl/cpu"
    done = subprocess.run(
        [
            "make",
            "-f",
            str(ROOT / "Makefile"),
            f"VENV={venv}",
            f"TORCH_CPU_INDEX={unreachable}",
            "NVIDIA_SMI=",
            "PIP_FLAGS=--dry-run",
            f"{venv}/.torch",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"torch: no NVIDIA GPU here, but {unreachable} cannot be reached: torch==2.13.0 from the default index" in (
        done.stdout
    )
    assert "Would install" in done.stdout and "torch-2.13.0" in done.stdout.split("cannot be reached")[1]
