from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import ROOT

from imginav_core.data.synthetic import generate_layouts


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory) -> Path:
    """A small synthetic set in the real manifest format, shared by the tests that only read it."""
    return generate_layouts(tmp_path_factory.mktemp("synthetic") / "set", samples=40, resolution=64, seed=3)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> Path:
    """An output root holding a finished 2-epoch V1 and V2 run on tiny synthetic layouts."""
    from helpers import V1, V2, small_config

    from imginav_core import train

    root = tmp_path_factory.mktemp("runs")
    for config in (V1, V2):
        # 96 layouts: about a dozen apartments, so the test split holds a few groups of rooms and scenes
        train(small_config(config, root, **{"training.epochs": 2, "data.synthetic_samples": 96}), log=lambda _: None)
    return root


@pytest.fixture
def one_thread():
    """Train on one CPU thread: torch's threads wait for each other at every operation, so on a
    shared 2-core machine a busy core makes the tiny test models ~10x slower with two. For tests
    of files and messages, not of speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the whole study, run the way the cluster runs it --------------------------------------

# The plan of the whole-study tests: V1 and V2 with 2 seeds each (each arm has replicates), tiny.
SMALL_PLAN = [
    "--seeds",
    "42,43",
    *("--set", "training.device=cpu", "--set", "probe.device=cpu", "--set", "analysis.device=cpu"),
    *("--set", "training.epochs=2", "--set", "data.resolution=32", "--set", "data.synthetic_samples=64"),
    *("--set", "data.num_workers=0", "--set", "analysis.max_images=16"),
    *(
        "--set",
        "probe.steps=20",
        "--set",
        "probe.batch_size=16",
        "--set",
        "probe.width=16",
        "--set",
        "probe.samples=12",
    ),
]


def copy_of_repository(target: Path) -> Path:
    """The repository's files (tracked and not ignored) in ``target``: the tests run the job
    scripts and build the book there, never touching the working copy's outputs or report."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="session")
def html_manager_package(tmp_path_factory) -> Path:
    """The ipywidgets HTML manager from the npm registry, fetched once for every book the tests build."""
    from imginav_core.study.analysis.report import HTML_MANAGER

    folder = tmp_path_factory.mktemp("npm")
    name = (
        subprocess.run(
            ["npm", "pack", HTML_MANAGER, "--silent"], cwd=folder, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return folder / name


def study_environment(repo: Path, lsf_dir: Path, html_manager: Path) -> dict[str, str]:
    """The environment a user submits from: no setting in it (the plan holds them), only where the
    study is, the widget script's package, no conda (this Python), and the stand-in bsub first."""
    python_bin = Path(os.sys.executable).parent
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMGINAV_")},
        "IMGINAV_CONDA_ENV": "",
        "PATH": f"{ROOT / 'tests' / 'lsf'}{os.pathsep}{python_bin}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LSF_DIR": str(lsf_dir),
        "IMGINAV_OUTPUTS": str(repo / "outputs"),
        "IMGINAV_HTML_MANAGER": str(html_manager),
        # an array's elements at once, as on the cluster (one thread each): the training half of
        # the fixture in half the time
        "FAKE_LSF_CONCURRENT": "1",
    }


@pytest.fixture(scope="session")
def study(tmp_path_factory, html_manager_package):
    """Phase 1.2 planned and submitted with hpc/launch_phase1_2.sh through a stand-in bsub, at a tiny
    size: the plan's runs (V1 and V2 x 2 seeds) trained by papermill as job array elements, the
    diffusion probe, the analysis notebook, the Jupyter Book built."""
    repo = copy_of_repository(tmp_path_factory.mktemp("repo"))
    env = study_environment(repo, tmp_path_factory.mktemp("lsf"), html_manager_package)
    launch = ["bash", "hpc/launch_phase1_2.sh", *SMALL_PLAN]
    done = subprocess.run(launch, cwd=repo, env=env, capture_output=True, text=True)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((repo / "hpc" / "logs").glob("*.*")))
    assert done.returncode == 0, done.stdout + done.stderr + logs
    return {
        "repo": repo,
        "env": env,
        "stdout": done.stdout,
        "outputs": repo / "outputs",
        "phase_dir": repo / "outputs" / "phase1_2_vae_test",
        "html": repo / "book" / "_build" / "html",
    }


# The second whole study of the report's tests: 5 seeds per arm (the study's default) and the KL-weight
# sweep, so that the report is read as a real study's is, with every section a sweep adds. To stay as
# tiny as the first, its runs train 1 epoch and the sweep has one weight of its own (1e-3, beside V1's 0
# and V2's 1e-4): 15 runs instead of 30.
SWEEP_WEIGHTS = "kld_sweep: [0.0, 1.0e-4, 1.0e-3]"


def _sweep_plan(study_file: Path) -> list[str]:
    plan = list(SMALL_PLAN)
    plan[plan.index("--seeds") + 1] = "42,43,44,45,46"
    plan[plan.index("training.epochs=2")] = "training.epochs=1"
    return [*plan, "--sweep", "--study", str(study_file)]


@pytest.fixture(scope="session")
def sweep_study(tmp_path_factory, html_manager_package):
    """As ``study``, with 5 seeds per arm and the KL-weight sweep (at one weight of its own): planned
    and submitted with hpc/launch_phase1_2.sh through the stand-in bsub, the array's elements at once,
    the probe, the analysis and the report built."""
    repo = copy_of_repository(tmp_path_factory.mktemp("repo_sweep"))
    env = study_environment(repo, tmp_path_factory.mktemp("lsf_sweep"), html_manager_package)
    default = (repo / "configs" / "phase1_2" / "study.yaml").read_text()
    study_file = repo / "configs" / "phase1_2" / "study_tiny_sweep.yaml"  # beside the arms' configs it names
    lines = [SWEEP_WEIGHTS if line.startswith("kld_sweep:") else line for line in default.splitlines()]
    study_file.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        ["bash", "hpc/launch_phase1_2.sh", *_sweep_plan(study_file)], cwd=repo, env=env, capture_output=True, text=True
    )
    shown = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((repo / "hpc" / "logs").glob("*.*")))
    assert done.returncode == 0, done.stdout + done.stderr + shown
    phase_dir = repo / "outputs" / "phase1_2_vae_test"
    assert (phase_dir / "decision.json").is_file() and (repo / "book" / "_build" / "html" / "intro.html").is_file(), (
        done.stdout + done.stderr + shown
    )
    return {
        "repo": repo,
        "outputs": repo / "outputs",
        "phase_dir": repo / "outputs" / "phase1_2_vae_test",
        "html": repo / "book" / "_build" / "html",
    }
