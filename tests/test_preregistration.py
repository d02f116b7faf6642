"""A finished study, explored and copied as users do: the notebooks opened on it with no parameters
compute nothing and change no file of it; a plain copy (`cp -r`: new file times) analyses with the
same verdict, still pre-registered."""

import hashlib
import json
import shutil
import subprocess

import pytest


def _files(root):
    """Every file under ``root`` with the sha256 of its bytes."""
    return {
        p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def copied(study, tmp_path):
    """The study copied as `cp -r` copies it: the same bytes, new file times."""
    root = tmp_path / "copied study"
    shutil.copytree(study["outputs"], root, copy_function=shutil.copy)
    return root


def _notebook(study, name, output, root, *parameters):
    env = {**study["env"], "IMGINAV_OUTPUTS": str(root)}
    command = ["papermill", f"notebooks/{name}.ipynb", str(output), *parameters]
    return subprocess.run(command, cwd=study["repo"], env=env, capture_output=True, text=True)


def _text(notebook) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))


def test_the_notebooks_opened_on_a_finished_study_compute_nothing_and_change_no_file(study, copied, tmp_path):
    """Run All with no parameters, as in `make lab` (IMGINAV_OUTPUTS names the study): the training
    notebook shows the first planned run and trains nothing; the probe's shows its recorded results
    and probes nothing; the analysis measures again, writes nothing of the study and says its
    decision is the study's."""
    before = _files(copied)
    for name in ("train", "diffusion_probe", "analysis"):
        done = _notebook(study, name, tmp_path / f"{name}.ipynb", copied)
        assert done.returncode == 0, (name, done.stderr[-3000:])
    assert _files(copied) == before  # not a byte of the study written, no file added
    train = _text(tmp_path / "train.ipynb")
    assert "the study's first planned run" in train and "nothing to do" not in train and "epoch 1/" not in train
    assert "training the denoiser" not in _text(tmp_path / "diffusion_probe.ipynb")
    analysis = _text(tmp_path / "analysis.ipynb")
    assert "the same decision as the study's OUTPUT_ROOT/phase1_2_vae_test/decision.json (left as it is)" in analysis


def test_a_plain_copy_of_a_finished_study_analyses_with_the_same_verdict(study, copied, tmp_path):
    """`cp -r` gives every file a new time; what the probe measured is told by the checkpoints'
    digests, and the decoded cache by the layouts' paths within the data set: the analysis job's
    notebook runs on the copy, reuses its cache and decides as the original did, pre-registered."""
    caches = sorted(p.name for p in (copied / "cache").iterdir())
    done = _notebook(study, "analysis", tmp_path / "analysis.ipynb", copied, "-p", "job", "True")
    assert done.returncode == 0, done.stderr[-3000:]
    original = json.loads((study["phase_dir"] / "decision.json").read_text())
    again = json.loads((copied / "phase1_2_vae_test" / "decision.json").read_text())
    assert (again["choice"], again["verdict"]) == (original["choice"], original["verdict"])
    primary = again["criteria"]["generation_fld"]
    assert primary["ci95"] == original["criteria"]["generation_fld"]["ci95"]
    assert again["protocol"]["status"] == original["protocol"]["status"] == "pre-registered"
    assert again["protocol"]["sha256"] == original["protocol"]["sha256"]
    assert sorted(p.name for p in (copied / "cache").iterdir()) == caches  # no cache built again
