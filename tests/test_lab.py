"""`make lab`: JupyterLab on copies of the notebooks, opened on the demo's study; exploring there
changes nothing of the study or the repository."""

import shutil
import subprocess

from helpers import ROOT

from imginav_core.study.jobs import output_root
from imginav_core.study.notebooks import study_root


def test_the_notebooks_open_on_the_study_imginav_outputs_names(monkeypatch):
    assert output_root({}) == ROOT / "outputs"
    assert output_root({"IMGINAV_OUTPUTS": ""}) == ROOT / "outputs"  # set but empty: the default
    assert output_root({"IMGINAV_OUTPUTS": "outputs/demo"}) == ROOT / "outputs/demo"  # relative: to the repository
    monkeypatch.setenv("IMGINAV_OUTPUTS", "outputs/demo")
    assert study_root() == ROOT / "outputs/demo" and study_root("elsewhere") == ROOT / "elsewhere"


def _make(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "venv", "-o", ".venv/.installed", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_make_lab_starts_jupyterlab_on_copies_of_the_notebooks_opened_on_the_demo_and_says_how_to_open_it():
    done = _make("-n", "lab", "OUTPUTS=outputs/other")
    assert done.returncode == 0, done.stderr
    command = done.stdout.strip().splitlines()[-1]
    assert command.startswith("IMGINAV_OUTPUTS=outputs/other ") and "jupyter lab --notebook-dir=outputs/lab" in command
    said = done.stdout.lower()
    assert "?token=" in said and "outputs/other" in said  # where to look for the address, which study


def test_exploring_in_the_lab_leaves_git_status_clean(tmp_path):
    """The lab's notebooks are copies outside what git tracks: running them (JupyterLab's autosave
    writes their outputs back) and editing them leaves `git status` clean; a copy with edits is
    kept when the lab starts again, said."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv", "outputs", "book", "__pycache__", ".git"))
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    started = _make("lab", "LAB_FLAGS=--version", cwd=repo)  # jupyter lab --version: the lab starts and ends
    assert started.returncode == 0, started.stdout + started.stderr
    copy = repo / "outputs" / "lab" / "train.ipynb"
    assert copy.read_text() == (repo / "notebooks" / "train.ipynb").read_text()
    copy.write_text(
        copy.read_text().replace(
            '"outputs": []', '"outputs": [{"output_type": "stream", "name": "stdout", "text": ["x"]}]', 1
        )
    )
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout == ""
    again = _make("lab", "LAB_FLAGS=--version", cwd=repo)
    assert "outputs/lab/train.ipynb is kept: it differs from notebooks/train.ipynb" in again.stdout
    assert '"text": ["x"]' in copy.read_text()  # the explorer's copy kept
