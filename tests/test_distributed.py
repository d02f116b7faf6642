"""Data-parallel training: two processes under torchrun (gloo on the CPU) give the metrics of one."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import PHASE, ROOT, V1, V1_NAME, config_file, metrics_rows

from imginav_core.config import parse_overrides
from imginav_core.data.batches import EpochBatches
from imginav_core.training.metrics_csv import TIMING_COLUMNS

# Two processes split every global batch of 8 into equal shares of 4, so each rank's mean loss
# averages (DDP averages the gradients) to the one-process mean. What remains is float summation
# order (gradients all-reduced, metrics summed per rank), about 1e-7 relative here; 1e-4 also
# covers batches split unevenly, where the mean of per-rank means, and the segmentation CE
# normalised by each rank's own count of valid pixels, differ slightly from the global mean.
RELATIVE_TOLERANCE = 1e-4
# float32: bf16 autocast (on by default on CPUs with native bf16) rounds differently for a batch of
# 4 than for one of 8, which would hide what this test compares, the data-parallel arithmetic.
SETTINGS = [
    "data.resolution=32",
    "training.epochs=2",
    "training.batch_size=8",
    "data.num_workers=0",
    "training.device=cpu",
    "training.amp=off",
]


def _train(launcher: list[str], output_root, extra: tuple[str, ...] = ()) -> list[dict[str, str]]:
    settings = parse_overrides([*SETTINGS, *extra, f"output_root={output_root}"])
    config = config_file(Path(output_root).parent / f"{Path(output_root).name}.yaml", V1, settings)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*launcher, "-m", "imginav_core", "train", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return metrics_rows(output_root / PHASE / f"{V1_NAME}_metrics.csv")


# eager: 48 layouts, 20 for training (the last batch of each epoch a short one of 4) and 5 for
# validation (split 3 + 2, unevenly). compiled: 76 layouts, 32 for training and 6 for validation, every batch
# split evenly, so that inductor compiles one training graph (and one for evaluation), not also
# a dynamic-shape one for the last batch: that third compilation doubled the test's time, and
# the uneven arithmetic is the eager case's.
SAMPLES = {False: 48, True: 76}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: one process, eager, per set size (trained once)."""
    done = {}

    def reference(samples: int) -> list[dict[str, str]]:
        if samples not in done:
            done[samples] = _train(
                [sys.executable], tmp_path_factory.mktemp("single"), (f"data.synthetic_samples={samples}",)
            )
        return done[samples]

    return reference


# compiled: what a multi-GPU job runs (torch.compile is on by default on CUDA), DDP's graph split
# at its gradient buckets included; inductor's fused float32 kernels round slightly differently
# from eager ones, well within the tolerance.
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_two_processes_give_the_metrics_of_one(single, tmp_path, compiled):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    samples = f"data.synthetic_samples={SAMPLES[compiled]}"
    parallel = _train(torchrun, tmp_path / "ddp", (samples, "training.compile=on") if compiled else (samples,))
    one_process = single(SAMPLES[compiled])
    assert list(parallel[0]) == list(one_process[0])  # the same columns, in the same order
    assert [r["epoch"] for r in parallel] == [r["epoch"] for r in one_process] == ["1", "2"]
    run_dir = tmp_path / "ddp" / "experiments" / V1_NAME
    assert (run_dir / "last.pt").is_file() and (run_dir / f"{V1_NAME}_metrics.csv").is_file()
    (session,) = json.loads((run_dir / "provenance.json").read_text())["sessions"]  # written once, by rank 0
    assert session["world_size"] == 2
    for one, two in zip(one_process, parallel):
        for column in one.keys() - set(TIMING_COLUMNS):
            try:
                a, b = float(one[column]), float(two[column])
            except ValueError:  # status
                assert one[column] == two[column], column
                continue
            assert math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-9), (column, a, b)


@pytest.mark.parametrize("size,batch,world", [(29, 8, 2), (17, 16, 2), (35, 16, 3), (7, 4, 4), (12, 4, 2)])
def test_ranks_split_every_batch(size, batch, world):
    def shares(lockstep):
        out = []
        for rank in range(world):
            sampler = EpochBatches(size, batch, shuffle=True, seed=1, rank=rank, world=world, lockstep=lockstep)
            sampler.set_epoch(3)
            out.append(list(sampler))
            assert len(sampler) == len(out[-1])
        return out

    # evaluation: every image exactly once, over all ranks
    seen = np.concatenate([b for rank in shares(False) for b in rank])
    assert sorted(seen.tolist()) == list(range(size))
    # training: every rank takes the same number of steps (DDP all-reduces at each), and together
    # the ranks take each global batch of one process (a last batch smaller than world is dropped)
    train = shares(True)
    assert len({len(rank) for rank in train}) == 1
    one = EpochBatches(size, batch, shuffle=True, seed=1)
    one.set_epoch(3)
    for step, whole in enumerate(one):
        if step < len(train[0]):
            assert sorted(np.concatenate([rank[step] for rank in train]).tolist()) == sorted(whole.tolist())
        else:
            assert len(whole) < world
