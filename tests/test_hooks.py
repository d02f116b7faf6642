"""The pre-commit hooks as a contributor meets them: installed once with `.venv/bin/pre-commit
install`, then run by `git commit` from a shell where the venv is not activated. They stop a
commit that ruff, nbstripout or shellcheck would change or refuse, fix what can be fixed, and let
the fixed commit through."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_of_repository

PYTHON_TOOLS = ("ruff", "nbstripout", "pre-commit")  # the hooks' tools from pyproject's dev extras


def _git(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)"
)
def test_the_installed_hooks_fix_or_stop_a_commit_without_the_venv_on_path(tmp_path):
    repo = copy_of_repository(tmp_path / "repo")
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the venv make venv builds
    # a shell without the venv activated: this PATH without any folder that holds ruff or nbstripout
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not any((Path(p) / t).exists() for t in PYTHON_TOOLS)]
    env = {
        "PATH": os.pathsep.join(path),
        "HOME": str(tmp_path),
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    assert shutil.which("ruff", path=env["PATH"]) is None  # else this would not test the lookup
    _git(repo, "init", "-q", env=env)
    _git(repo, "add", "-A", env=env)
    assert _git(repo, "commit", "-q", "--no-verify", "-m", "start", env=env).returncode == 0
    installed = subprocess.run(
        [sys.executable, "-m", "pre_commit", "install"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    # an unformatted module, a notebook with outputs, a script with an unquoted variable
    (repo / "imginav_core" / "scratch.py").write_text("x = ( 1,2 )\n")
    notebook = json.loads((repo / "notebooks" / "train.ipynb").read_text())
    code = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["a result\n"]}]
    code["execution_count"] = 7
    (repo / "notebooks" / "train.ipynb").write_text(json.dumps(notebook, indent=1) + "\n")
    (repo / "hpc" / "scratch.sh").write_text("#!/usr/bin/env bash\necho $1\n")
    _git(repo, "add", "-A", env=env)
    stopped = _git(repo, "commit", "-q", "-m", "scratch", env=env)
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0, said
    assert "not found" not in said  # every tool was found
    assert "SC2086" in said  # shellcheck named the unquoted variable
    assert (repo / "imginav_core" / "scratch.py").read_text() == "x = (1, 2)\n"  # ruff format fixed it
    stripped = json.loads((repo / "notebooks" / "train.ipynb").read_text())
    assert all(
        not c.get("outputs") and c.get("execution_count") is None for c in stripped["cells"] if c["cell_type"] == "code"
    )

    # with the script fixed and the fixes added, the same commit goes through
    (repo / "hpc" / "scratch.sh").write_text('#!/usr/bin/env bash\necho "$1"\n')
    _git(repo, "add", "-A", env=env)
    done = _git(repo, "commit", "-q", "-m", "scratch", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
