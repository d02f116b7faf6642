"""How long the whole Phase 1.2 takes on this machine, from a short real ``train()``.

    python -m imginav_core phase-timing [--set KEY=VALUE ...] [--json PATH] [--work-dir DIR]

Trains V1 for a few epochs on synthetic layouts, exactly as ``python -m imginav_core train``
would (fast path, validation, sample grids, checkpoints), and times every epoch from start to
its log line. The first epoch carries the one-off costs (building the model, torch.compile);
the later ones are the steady cost. The estimate for the full phase scales those to the real
set, the default plan's runs (V1 and V2 x its seeds) x 10 epochs x 27,897 images split as the
config splits them (70/10/20: train, validation, test): the training pass with the training
images, the validation pass (``val_seconds`` in the metrics) with the validation images, and the rest of
an epoch (sample grid, checkpoints, metrics files) kept as it is, since it does not grow with the
data. Decoding the real PNGs into the cache is one-off and estimated separately from the decode
rate measured here.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ...config import Config, load_config
from ...data.batches import load_data
from ...errors import ConfigError
from ...files import write_text_atomic
from ...runtime import device_name, setup_runtime
from ...training import train
from ..arms import read_study_file
from . import log

# The study file's arms: what the benchmark times, each by its label.
EXPERIMENTS = {label: arm.config for label, arm in read_study_file().arms.items()}

REAL_IMAGES = 27_897  # usable layouts of the real set (book/using/probe.md, the data)
EPOCHS = 10  # each run's, as the experiment configs train
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+  train ")  # train()'s summary line, logged as an epoch ends


# What the timing run trains unless told otherwise: enough layouts for steady epochs, a few epochs,
# every one of them run whatever the losses do.
DEFAULTS = {"data.synthetic_samples": 4000, "training.epochs": 3, "training.early_stopping.patience": 0}


def timing_config(overrides: dict[str, Any], work_dir: Path) -> Config:
    cfg = load_config(EXPERIMENTS["V1"], {**DEFAULTS, **overrides, "output_root": str(work_dir)})
    if cfg.training.epochs < 2:
        raise ConfigError(
            f"phase-timing: training.epochs = {cfg.training.epochs}: at least 2 (the first epoch "
            "includes the one-off costs, torch.compile among them)"
        )
    return cfg


def timed_training(cfg: Config) -> dict[str, Any]:
    """Prepare the data (timed apart), then train, stamping each epoch's end."""
    start = time.perf_counter()
    data = load_data(cfg, log)
    prepare = time.perf_counter() - start
    ends: dict[int, float] = {}

    def stamp(message: str) -> None:
        log(message)
        match = EPOCH_LINE.match(message)
        if match:
            ends[int(match.group(1))] = time.perf_counter()

    start = time.perf_counter()
    train(cfg, log=stamp)
    if sorted(ends) != list(range(1, cfg.training.epochs + 1)):
        raise RuntimeError(
            f"expected an end-of-epoch line for each of {cfg.training.epochs} epochs, saw {sorted(ends)}"
        )
    epoch_wall = [ends[1] - start] + [ends[e] - ends[e - 1] for e in range(2, cfg.training.epochs + 1)]
    with open(cfg.outputs.metrics_csv(cfg.name), newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "layouts": len(data.cache),
        "train_images": len(data.train),
        "val_images": len(data.val),
        "prepare_seconds": prepare,  # generating the synthetic PNGs and decoding them into the cache
        "epoch_wall_seconds": epoch_wall,
        "epoch_train_seconds": [float(r["epoch_seconds"]) for r in rows],
        "epoch_val_seconds": [float(r["val_seconds"]) for r in rows],
        "train_images_per_s": [float(r["train_images_per_s"]) for r in rows],
    }


def estimate(measured: dict[str, Any], val_fraction: float, test_fraction: float, runs: int) -> dict[str, float]:
    """Scale the steady epochs to the real set split into train / validation / test by these
    fractions (the test split is measured by the analysis, not in training) and add the first
    epoch's one-off costs; ``runs`` such runs."""
    steady_wall = statistics.median(measured["epoch_wall_seconds"][1:])
    steady_train = statistics.median(measured["epoch_train_seconds"][1:])
    steady_val = statistics.median(measured["epoch_val_seconds"][1:])
    images_per_s = statistics.median(measured["train_images_per_s"][1:])
    per_epoch = max(steady_wall - steady_train - steady_val, 0.0)  # sample grid, checkpoints, metrics files
    real_train, real_val = (1 - val_fraction - test_fraction) * REAL_IMAGES, val_fraction * REAL_IMAGES
    epoch = real_train / images_per_s + steady_val * real_val / measured["val_images"] + per_epoch
    one_off = max(measured["epoch_wall_seconds"][0] - steady_wall, 0.0)  # model, compile warm-up
    run = one_off + EPOCHS * epoch
    return {
        "steady_train_images_per_s": images_per_s,
        "steady_val_images_per_s": measured["val_images"] / steady_val if steady_val > 0 else None,
        "other_seconds_per_epoch": per_epoch,
        "one_off_seconds_per_run": one_off,
        "real_epoch_seconds": epoch,
        "real_run_seconds": run,
        "runs": runs,
        "phase_seconds": runs * run,
        "phase_minutes": runs * run / 60,
    }


def report_lines(result: dict[str, Any]) -> list[str]:
    m, e = result["measured"], result["estimate"]
    walls = ", ".join(f"{s:.1f}" for s in m["epoch_wall_seconds"])
    return [
        f"Phase 1.2 timing: {result['device']} ({result['device_name']}), torch {result['torch']}, "
        f"{result['resolution']}x{result['resolution']}, "
        f"V1 on {m['train_images']} + {m['val_images']} synthetic layouts",
        f"epoch wall seconds (train + validation + samples + checkpoints): {walls}",
        f"steady training {e['steady_train_images_per_s']:.0f} images/s, validation "
        f"{e['steady_val_images_per_s'] or float('nan'):.0f} images/s, {e['other_seconds_per_epoch']:.1f} s per epoch "
        f"besides (samples, checkpoints); one-off per run {e['one_off_seconds_per_run']:.0f} s",
        f"estimate for the real set ({REAL_IMAGES} images, {result['split']}): {e['real_epoch_seconds']:.0f} s per "
        f"epoch, {e['real_run_seconds'] / 60:.1f} min per 10-epoch run, {e['phase_minutes']:.1f} min for the "
        f"default plan's {e['runs']} runs",
        f"one-off cache build of the real PNGs (not in the estimate): about "
        f"{result['real_cache_build_seconds']:.0f} s at the decode rate measured here",
    ]


def main(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """``python -m imginav_core phase-timing``: the options are defined with the command line."""
    with tempfile.TemporaryDirectory(prefix="imginav-phase-") as scratch:
        cfg = timing_config(overrides, args.work_dir or Path(scratch))
        device = setup_runtime(cfg).device
        measured = timed_training(cfg)
    val, test = cfg.data.val_fraction, cfg.data.test_fraction
    result = {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "resolution": cfg.data.resolution,
        "epochs": cfg.training.epochs,
        "measured": measured,
        "split": f"train / validation / test {1 - val - test:.0%} / {val:.0%} / {test:.0%}",
        "estimate": estimate(measured, val, test, runs=len(read_study_file().arms) * len(read_study_file().seeds)),
        # prepare_seconds covers drawing the synthetic PNGs as well: an upper bound on decoding alone
        "real_cache_build_seconds": measured["prepare_seconds"] / max(measured["layouts"], 1) * REAL_IMAGES,
    }
    print("\n" + "\n".join(report_lines(result)), flush=True)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
        log(f"figures written to {args.json}")
    return 0
