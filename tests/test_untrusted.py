"""Files from a shared folder cannot run code, and names cannot reach outside the output root."""

import os

import pytest
import torch
from helpers import ROOT, TINY_MODEL, V1, V1_NAME, run_dir, small_config

from imginav_core import ConfigError, load_config, train
from imginav_core.__main__ import main
from imginav_core.errors import CheckpointError, ResumeError
from imginav_core.training.checkpoints import load_checkpoint, load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for any code a file could carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "experiments" / V1_NAME / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"format": 1, "model": {}, "extra": _RunsCode(marker)}, path)
    with pytest.raises(
        CheckpointError, match=r"last.pt: refused: it asks to build the Python object .*open, which could run code"
    ):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path)
    # the same file where a run would resume from it
    with pytest.raises(CheckpointError, match="refused"):
        train(small_config(V1, tmp_path, **TINY_MODEL), log=lambda _: None)
    assert not marker.exists()


def test_a_checkpoint_is_plain_data_and_a_foreign_file_is_named(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", {"model": {"w": torch.ones(2)}, "config": {"name": "x"}})
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["model"]["w"], torch.ones(2))
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")  # someone else's torch file
    with pytest.raises(CheckpointError, match=r"other.pt: not an imginav_core checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_every_torch_load_in_the_package_is_weights_only():
    for source in (ROOT / "imginav_core").rglob("*.py"):
        for number, line in enumerate(source.read_text().splitlines(), start=1):
            if "torch.load(" in line and "``" not in line:
                assert "weights_only=True" in line, f"{source}:{number}: {line.strip()}"


def test_a_yaml_tag_that_would_build_an_object_is_refused(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"inherit: {V1}\nname: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"evil.yaml: refused \(line 2\): .*python/object/apply:os.system"):
        load_config(config)
    config.write_text(f"inherit: {V1}\ntraining: !!python/object:argparse.Namespace {{epochs: 1}}\n")
    with pytest.raises(ConfigError, match=r"evil.yaml: refused \(line 2\): .*python/object:argparse.Namespace"):
        load_config(config)
    # the same through a setting given to the plan: an error message, exit status 2, nothing run
    evil = f"data.manifest=!!python/object/apply:os.system ['touch {marker}']"
    assert main(["plan", "--out", str(tmp_path / "study"), "--set", evil]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("name", ["..", ".", "../escaped", "a/b", "/tmp/abs", "x\\y", "", "name with space"])
def test_experiment_names_cannot_leave_the_output_root(name):
    with pytest.raises(ConfigError, match=r"'name'.*(letters, digits|not a usable folder name)"):
        load_config(V1, {"name": name})


@pytest.mark.parametrize("phase", ["..", "../escaped", "a/b"])
def test_the_phase_folder_cannot_leave_the_output_root(phase):
    with pytest.raises(ConfigError, match=r"'phase'"):
        load_config(V1, {"phase": phase})


def test_a_checkpoint_naming_another_experiment_is_not_resumed(tmp_path):
    """A last.pt copied in from elsewhere (another name or architecture) is refused, not mixed in."""
    cfg = small_config(V1, tmp_path, **TINY_MODEL)
    train(small_config(V1, tmp_path / "elsewhere", **TINY_MODEL, **{"name": "someone_else"}), log=lambda _: None)
    run_dir(cfg).mkdir(parents=True)
    os.replace(tmp_path / "elsewhere" / "experiments" / "someone_else" / "last.pt", run_dir(cfg) / "last.pt")
    with pytest.raises(ResumeError, match=r"name: 'someone_else' -> 'phase1_2_AE_V1_deterministic'"):
        train(cfg, log=lambda _: None)
