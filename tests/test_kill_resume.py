"""Jobs that survive the cluster: training killed with SIGKILL at chosen moments, then the same
command run again, must end exactly like an uninterrupted run; V1 and V2 training at once into
one output root must end exactly like V1 and V2 trained one after the other.

Every run is a real ``python -m imginav_core train`` process. The moments come from the kill
points of ``imginav_core.files`` (``IMGINAV_KILL_AT``), plus one kill from outside at a random
progress line, as a batch system would send it. The runs use a tiny model and one thread each:
the subject is the files, not the model, and one thread keeps CPU time short on a shared machine
(every run of this module uses the same settings, so their numbers are comparable bit for bit).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PHASE, ROOT, TINY_MODEL, V1, V1_NAME, V2, V2_NAME, config_file, metrics_rows
from PIL import Image

from imginav_core.config import load_config
from imginav_core.data.manifest import read_manifest
from imginav_core.training.checkpoints import load_checkpoint
from imginav_core.training.metrics_csv import columns

EPOCHS = 3
SETTINGS = {
    "data.resolution": 32,
    "data.synthetic_samples": 48,
    "training.epochs": EPOCHS,
    "training.batch_size": 6,  # 24 training layouts (70 %): 4 steps per epoch; 4 validation (10 %): 1 batch
    "training.device": "cpu",
    **TINY_MODEL,
}
CSV = f"{V2_NAME}_metrics.csv"

# Each scenario: the moments of successive kills (usually one), each followed by the same command.
# Counts (@N) are per process; epochs have 4 train steps, 1 validation batch, and write the
# metrics CSV twice (run folder, then phase folder).
SCENARIOS = {
    "epoch 2 mid-training (step 2 of 4)": ["train_step@6"],
    "epoch 2 during evaluation": ["evaluate@2"],
    "epoch 2 writing best.pt": ["written:best.pt@2"],
    "epoch 2 writing last.pt": ["written:last.pt@2"],
    "epoch 2 writing the metrics CSV": [f"written:{CSV}@3"],
    "epoch 3 (last) writing the phase copy of the metrics CSV": [f"written:{CSV}@6"],
    "random progress line, kill from outside": ["random"],
    "startup: synthetic set, then cache, then config.yaml": [
        "written:layouts.csv",
        "written:meta.json",
        "written:config.yaml",
    ],
    "epoch 1 writing the sample PNG, then epoch 2 with last.pt's temporary still empty": [
        f"written:{V2_NAME}_epoch_001_comparison.png",
        "write:last.pt@2",
    ],
}


def _command(config: Path, root: Path, workers: int = 0) -> list[str]:
    settings = {**SETTINGS, "output_root": root, "data.num_workers": workers}
    written = config_file(root.parent / f"{root.name}_{config.stem}_{workers}.yaml", config, settings)
    return [sys.executable, "-m", "imginav_core", "train", str(written)]


def _env(kill_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "IMGINAV_KILL_AT"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if kill_at:
        env["IMGINAV_KILL_AT"] = kill_at
    return env


def _start(config: Path, root: Path, kill_at: str | None = None, workers: int = 0) -> subprocess.Popen:
    # A session of its own, like a batch job: killing its process group leaves nothing behind.
    return subprocess.Popen(
        _command(config, root, workers),
        cwd=ROOT,
        env=_env(kill_at),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _reap(proc: subprocess.Popen) -> None:
    """End what a killed job's main process left running (its data-loading workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _finish(proc: subprocess.Popen, reap: bool = True) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=600)
    if reap:
        _reap(proc)
    return proc.returncode, output


def _run(config: Path, root: Path, kill_at: str | None = None, workers: int = 0) -> tuple[int, str]:
    return _finish(_start(config, root, kill_at, workers))


def _run_killed_at_random_line(config: Path, root: Path, rng: random.Random) -> tuple[int, str]:
    """Kill the whole job from outside after a random one of its training progress lines."""
    wanted = rng.randint(1, 4 * EPOCHS)  # of 5 lines per epoch (0% to 100%): the run is still going
    proc = _start(config, root)
    seen, lines = 0, []
    for line in proc.stdout:
        lines.append(line)
        seen += " train: " in line
        if seen == wanted:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    code, rest = _finish(proc)
    return code, f"(killed after training progress line {wanted})\n" + "".join(lines) + rest


def _models(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _same_weights(a: Path, b: Path) -> list[str]:
    wa, wb = _models(a), _models(b)
    return [k for k in wa if not torch.equal(wa[k], wb[k])] if wa.keys() == wb.keys() else ["<keys differ>"]


def assert_whole(root: Path) -> int:
    """Every output under ``root`` reads completely; returns the count of stray temporaries.

    Temporaries (``.*.tmp``) and staging folders (``.*.partial``) are left by a kill; nothing
    reads them, and the next run of the same command removes them.
    """
    strays = 0
    for path in sorted(root.rglob("*")):
        if path.is_dir() or any(part.endswith(".partial") for part in path.relative_to(root).parts):
            continue
        name = path.name
        if name.endswith(".tmp"):
            strays += 1
        elif name.endswith(".lock"):
            pass
        elif name.endswith(".pt"):
            assert load_checkpoint(path)["model"], path
        elif name.endswith("_metrics.csv"):
            with open(path, newline="") as handle:
                table = list(csv.reader(handle))
            assert table[0] == columns() and all(len(row) == len(columns()) for row in table[1:]), path
        elif name == "layouts.csv":
            read_manifest(path, drop_empty=False)
        elif name == "split.csv":
            assert path.read_text().startswith("layout_path,scene_id,type,split,group,hash\n"), path
        elif name == "off_palette.csv":
            assert path.read_text().startswith("layout_path,off_palette_share\n"), path
        elif name.endswith(".png"):
            with Image.open(path) as image:
                image.load()
        elif name == "config.yaml":
            assert load_config(path).output_root == str(root)  # its relative output root: this one
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".u8"):  # a decoded cache folder appears only once complete
            assert (path.parent / "meta.json").is_file(), path
        else:
            raise AssertionError(f"unexpected file {path}")
    return strays


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def _assert_same_run(name: str, root: Path, reference: Path) -> None:
    run, ref = root / "experiments" / name, reference / "experiments" / name
    for checkpoint in ("last.pt", "best.pt"):
        assert _same_weights(run / checkpoint, ref / checkpoint) == [], checkpoint
    assert load_checkpoint(run / "best.pt")["epoch"] == load_checkpoint(ref / "best.pt")["epoch"]
    expected = metrics_rows(ref / f"{name}_metrics.csv", timing=False)
    assert metrics_rows(run / f"{name}_metrics.csv", timing=False) == expected
    assert metrics_rows(root / PHASE / f"{name}_metrics.csv", timing=False) == expected
    for epoch in range(1, EPOCHS + 1):
        sample = Path(PHASE) / "samples" / f"{name}_epoch_{epoch:03d}_comparison.png"
        assert np.array_equal(np.asarray(Image.open(root / sample)), np.asarray(Image.open(reference / sample))), sample


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """V2 then V1, each uninterrupted, one after the other, in one output root."""
    root = tmp_path_factory.mktemp("reference")
    for config in (V2, V1):
        code, output = _run(config, root)
        assert code == 0, output
    return root


@pytest.mark.parametrize("kills", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_a_run_killed_at_any_moment_ends_like_an_uninterrupted_one(kills, reference, tmp_path):
    root = tmp_path / "out"
    run_dir = root / "experiments" / V2_NAME
    reference_rows = metrics_rows(reference / "experiments" / V2_NAME / CSV, timing=False)
    moments = []
    for kill_at in kills:
        if kill_at == "random":
            code, output = _run_killed_at_random_line(V2, root, random.Random())
            moments.append(output.splitlines()[0])
        else:
            moments.append(kill_at)
            code, output = _run(V2, root, kill_at)
        assert code == -signal.SIGKILL, f"not killed at {kill_at}:\n{output}"
        strays = assert_whole(root)
        if kill_at.startswith("write"):  # the kill caught the write half done
            assert strays >= 1
        # What the killed run committed matches the uninterrupted run's first epochs.
        if (run_dir / CSV).exists():
            rows = metrics_rows(run_dir / CSV, timing=False)
            assert rows == reference_rows[: len(rows)]
            assert len(rows) <= load_checkpoint(run_dir / "last.pt")["epoch"]
    committed = load_checkpoint(run_dir / "last.pt")["epoch"] if (run_dir / "last.pt").exists() else 0

    code, output = _run(V2, root)
    assert code == 0, output
    if committed:
        assert f"resuming {V2_NAME} after epoch {committed}" in output
    else:  # nothing was committed: a fresh start, not a resume
        assert "resuming" not in output
    _assert_same_run(V2_NAME, root, reference)
    assert assert_whole(root) == 0 and _leftovers(root) == []
    print(f"killed at {moments}, resumed after epoch {committed}: same weights and metrics")  # for -s


def test_a_run_with_data_workers_killed_mid_epoch_reruns_at_once_and_ends_the_same(reference, tmp_path):
    """The default config gathers batches in background threads: the kill takes them with the
    process, and the same command runs again at once."""
    root = tmp_path / "out"
    killed = _start(V2, root, "train_step@6", workers=2)
    try:
        code, output = _finish(killed, reap=False)
        assert code == -signal.SIGKILL, output
        code, output = _run(V2, root, workers=2)
        assert code == 0, output
    finally:
        _reap(killed)
    assert f"resuming {V2_NAME} after epoch 1" in output
    _assert_same_run(V2_NAME, root, reference)  # the reference loaded its batches without workers


def test_v1_and_v2_at_once_into_one_root_end_like_runs_one_after_the_other(reference, tmp_path):
    root = tmp_path / "out"
    jobs = [_start(config, root) for config in (V1, V2)]  # both start by building the shared data
    for job in jobs:
        code, output = _finish(job)
        assert code == 0, output
    for name in (V1_NAME, V2_NAME):
        _assert_same_run(name, root, reference)
    assert assert_whole(root) == 0 and _leftovers(root) == []
    # one synthetic set and one decoded cache, shared
    assert len([p for p in (root / "synthetic").iterdir() if p.is_dir()]) == 1
    assert len([p for p in (root / "cache").iterdir() if p.is_dir()]) == 1
