"""A training run that goes wrong stops clearly and keeps what was good: a non-finite loss, a
second copy of a running experiment, temporaries left by an earlier kill."""

import importlib
import math
import os
import signal
import subprocess
import sys
import tempfile

import pytest
import torch
from helpers import TINY_MODEL, V1, V2, metrics_rows, phase_dir, run_dir, small_config

from imginav_core import train
from imginav_core.data.batches import load_data
from imginav_core.data.cache import build_cache
from imginav_core.data.manifest import read_manifest
from imginav_core.errors import NonFiniteLossError, RunInProgressError
from imginav_core.files import exclusive_lock
from imginav_core.training.checkpoints import load_checkpoint

training = importlib.import_module("imginav_core.training.loop")  # the package's ``train`` is the function

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_non_finite_loss_mid_run_stops_with_epoch_step_and_terms_and_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    cfg = small_config(V2, tmp_path, **TINY_MODEL, **{"training.epochs": 3})
    real_losses = training.compute_losses
    train_steps = 0
    # step 3 of epoch 2 is training call (steps per epoch) + 3
    steps_per_epoch = math.ceil(len(load_data(cfg, log=lambda _: None).train) / cfg.training.batch_size)
    assert steps_per_epoch >= 3

    def overflowing_at_epoch_2_step_3(outputs, rgb, class_map, label, weights):
        nonlocal train_steps
        if torch.is_grad_enabled():
            train_steps += 1
            if train_steps == steps_per_epoch + 3:
                outputs = {**outputs, "rgb": outputs["rgb"] * math.inf}
        return real_losses(outputs, rgb, class_map, label, weights)

    monkeypatch.setattr(training, "compute_losses", overflowing_at_epoch_2_step_3)
    with pytest.raises(NonFiniteLossError) as stop:
        train(cfg, log=lambda _: None)
    message = str(stop.value)
    assert "non-finite loss at epoch 2, step 3: total=inf, mse=inf, segmentation=" in message
    assert "classification=" in message and "kld=" in message
    # named relative to the output root, so that a published log names no folder of this machine
    assert f"the last good checkpoint is OUTPUT_ROOT/experiments/{cfg.name}/last.pt (epoch 1)" in message

    last = load_checkpoint(run_dir(cfg) / "last.pt")
    assert last["epoch"] == 1 and all(torch.isfinite(w).all() for w in last["model"].values())
    assert load_checkpoint(run_dir(cfg) / "best.pt")["epoch"] == 1
    rows = metrics_rows(run_dir(cfg) / f"{cfg.name}_metrics.csv")
    assert [(r["epoch"], r["status"]) for r in rows] == [("1", "running"), ("2", "stopped_non_finite")]
    assert rows[1]["train_total"] == ""  # no numbers for the epoch that failed
    assert not (phase_dir(cfg) / "samples" / f"{cfg.name}_epoch_002_comparison.png").exists()


def test_a_diverging_first_epoch_says_there_is_no_checkpoint(tmp_path):
    # A learning rate of 1e6 sends the weights to NaN by the second step.
    cfg = small_config(V1, tmp_path, **TINY_MODEL, **{"training.lr": 1e6})
    with pytest.raises(
        NonFiniteLossError, match=r"epoch 1, step 2: total=nan.*no epoch completed, so there is no checkpoint"
    ):
        train(cfg, log=lambda _: None)
    assert not (run_dir(cfg) / "last.pt").exists() and not (run_dir(cfg) / "best.pt").exists()
    assert [(r["epoch"], r["status"]) for r in metrics_rows(run_dir(cfg) / f"{cfg.name}_metrics.csv")] == [
        ("1", "stopped_non_finite")
    ]


def test_a_second_copy_of_a_running_experiment_is_refused_before_it_writes(tmp_path):
    """A job resubmitted while the first one still trains must not write into its run folder."""
    cfg = small_config(V1, tmp_path, **TINY_MODEL)
    lock = tmp_path / "experiments" / f".{cfg.name}.lock"  # beside the run folder (README)
    lock.parent.mkdir(parents=True)
    # the first job: another process holding the experiment's lock (a process never conflicts
    # with its own lock, so it cannot be this one)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX); "
            "print('held', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunInProgressError, match=rf"another process is already training '{cfg.name}'"):
            train(cfg, log=lambda _: None)
    finally:
        holder.communicate("")  # the first job ends
    assert not run_dir(cfg).exists()
    train(cfg, log=lambda _: None)
    assert load_checkpoint(run_dir(cfg) / "last.pt")["epoch"] == 1


def test_a_killed_jobs_lock_is_free_at_once_even_while_a_worker_it_forked_lives(tmp_path):
    """The cache's decoding workers may outlive a killed job; the rerun of the job must not find
    its own lock still taken by them."""
    lock = tmp_path / ".experiment.lock"
    job = subprocess.Popen(
        [
            sys.executable,
            "-c",
            """
import os, signal, sys, time
from imginav_core.files import exclusive_lock
with exclusive_lock(sys.argv[1]):
    worker = os.fork()
    if worker == 0:
        time.sleep(120)
        os._exit(0)
    print(worker, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        worker = int(job.stdout.readline())
        assert job.wait(timeout=60) == -signal.SIGKILL
        os.kill(worker, 0)  # the orphaned worker still runs
        with exclusive_lock(lock):
            pass
    finally:
        os.killpg(job.pid, signal.SIGKILL)


def _leave_temporary(path):
    """What a writer killed mid-write leaves: the temporary of an atomic write (see files.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.write(fd, b"half a file")
    os.close(fd)


def test_a_restarted_run_removes_its_own_leftover_temporaries_and_no_one_elses(tmp_path):
    v1 = small_config(V1, tmp_path, **TINY_MODEL, **{"training.epochs": 2})
    v2 = small_config(V2, tmp_path, **TINY_MODEL)
    train(v1, log=lambda _: None)
    ours = [
        run_dir(v1) / "last.pt",
        phase_dir(v1) / f"{v1.name}_metrics.csv",
        phase_dir(v1) / "samples" / f"{v1.name}_epoch_002_comparison.png",
    ]
    theirs = [
        phase_dir(v2) / f"{v2.name}_metrics.csv",
        phase_dir(v2) / "samples" / f"{v2.name}_epoch_001_comparison.png",
    ]
    for path in ours + theirs:
        _leave_temporary(path)
    messages = []
    train(v1, log=messages.append)
    assert "removed 3 temporary file(s) left by an interrupted run" in messages
    left = sorted(p.name for p in tmp_path.rglob("*.tmp"))
    assert len(left) == 2 and all(name.startswith(f".{v2.name}_") for name in left)


def test_a_cache_build_killed_mid_way_leaves_no_staging_folder_behind(synthetic_manifest, tmp_path):
    """Even for a key that is never built again (the manifest changed since): at full size a
    staging folder holds tens of GB of someone's disk quota."""
    abandoned = tmp_path / "cache" / ".0123456789abcdef0123.partial"
    abandoned.mkdir(parents=True)
    (abandoned / "rgb.u8").write_bytes(bytes(1000))
    messages = []
    build_cache(
        read_manifest(synthetic_manifest).records,
        32,
        tmp_path / "cache",
        synthetic_manifest,
        workers=1,
        log=messages.append,
    )
    assert not abandoned.exists()
    # named by its last parts only: logs end up in the published report
    assert f"removed .../{tmp_path.name}/cache/{abandoned.name}, left by a cache build that was killed" in messages
