"""Training throughput: the fast path of ``train()`` against a straightforward one, side by side.

    python -m imginav_core bench [--set KEY=VALUE ...] [--steps 20] [--quick] [--json PATH]
                                 [--work-dir DIR] [--variant KEY=VALUE[,KEY=VALUE] ...] [--profile STEPS]

For V1 and V2 it times training steps (forward, losses, backward, AdamW) with the data loading
included, after warm-up, as the median of repeated timed windows, through two paths:

- fast: what ``train()`` does on this device: the decoded uint8 cache, whole batches gathered
  per index, float conversion on the device, the config's amp / channels_last / compile
  (``--set training.compile=off`` etc. switch them for comparison), no host sync in the step;
- straightforward: float32, contiguous layout, eager, a DataLoader whose Dataset decodes the PNG
  and matches its colours per sample, and ``.item()`` on the loss at every step.

Both run the same model through the same ``make_train_step`` with the same number of DataLoader
workers (``data.num_workers``); their windows alternate, so a machine busy with other work slows
both alike. Each data path is also timed alone (no model). The layouts are synthetic, generated
into a temporary folder (or ``--work-dir``, reused by later runs).

``--variant`` adds fast paths with some settings changed (``--variant training.channels_last=off``),
timed in the same alternating windows, so that candidate settings are compared under the same
load. ``--profile N`` then profiles N steps of each path's model alone (``perf.profile``): which
kernels take the step's time.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import json
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from ...config import SWITCHES, Config, load_config
from ...data.batches import CachedLayouts, batch_loader, load_data, to_model_inputs
from ...data.cache import load_layout
from ...data.manifest import LayoutRecord
from ...errors import ConfigError
from ...files import write_text_atomic
from ...model import build_model
from ...runtime import Runtime, device_name, maybe_compile, peak_memory, setup_runtime, synchronize
from ...training.loop import build_training, make_train_step
from ..arms import read_study_file
from . import STARTED, log
from .profile import profile_steps, profile_table

# The study file's arms: what the benchmark times, each by its label.
EXPERIMENTS = {label: arm.config for label, arm in read_study_file().arms.items()}

STRAIGHTFORWARD = {"training.amp": "off", "training.channels_last": "off", "training.compile": "off"}
QUICK = {"steps": 3, "windows": 3, "warmup": 1}
QUICK_RESOLUTION = 128
# What a --variant may change: how the same steps run, not which steps (batch, resolution, model),
# so that every path's images/s and FLOPs count the same work.
VARIANT_KEYS = sorted(SWITCHES | {"data.num_workers"})


# ---- settings --------------------------------------------------------------------------------


def settle(
    args: argparse.Namespace, overrides: dict[str, Any], variants: dict[str, dict[str, Any]]
) -> argparse.Namespace:
    """The command line's options with their defaults (``--quick``: small), checked before
    anything runs: a bad --set or --variant is a ConfigError naming the key."""
    quick = args.quick
    defaults = QUICK if quick else {"steps": 20, "windows": 5, "warmup": 3}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.overrides = dict(overrides)
    if quick:
        args.overrides.setdefault("data.resolution", QUICK_RESOLUTION)
    args.windows = max(1, min(args.windows, args.steps))
    unknown = set(args.models.split(",")) - set(EXPERIMENTS)
    if unknown or args.steps < 1 or args.profile < 0:
        raise ConfigError(
            f"bench: --models takes a subset of {','.join(EXPERIMENTS)}; --steps must be >= 1, --profile >= 0"
        )
    for variant, changes in variants.items():
        for key in sorted(set(changes) - set(VARIANT_KEYS)):
            close = difflib.get_close_matches(key, VARIANT_KEYS, n=1)
            why = (
                f"did you mean {close[0]}?"
                if close
                else "it cannot vary within one run (every path trains the same batches of the same model)."
            )
            raise ConfigError(f"--variant {variant}: {key}: {why} A variant sets only {', '.join(VARIANT_KEYS)}")
    args.variants = variants
    # the configs, once: a misspelt --set key fails now, not after the first model
    base = load_config(EXPERIMENTS["V1"], args.overrides)
    args.resolution, args.batch_size = base.data.resolution, base.training.batch_size
    for changes in variants.values():
        load_config(EXPERIMENTS["V1"], {**args.overrides, **changes})
    return args


def bench_config(key: str, args: argparse.Namespace, work_dir: Path, extra: dict[str, Any] | None = None) -> Config:
    overrides = {
        **args.overrides,
        "output_root": str(work_dir),
        # enough layouts for a few different batches after empty ones are dropped and 20% held out
        "data.synthetic_samples": max(8 * args.batch_size, 64),
        **(extra or {}),
    }
    return load_config(EXPERIMENTS[key], overrides)


# ---- memory ------------------------------------------------------------------------------------

MEMORY = "on a GPU torch.cuda.max_memory_allocated; on a CPU the process's peak resident size (VmHWM, reset per path)"


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):  # without it (not Linux): the peak since the process started
            Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS


def path_peak(device: torch.device) -> int:
    """Bytes: allocated by PyTorch on a GPU, resident for the whole process on a CPU."""
    peak = peak_memory(device)
    return peak["cuda_bytes"] if device.type == "cuda" else peak["resident_bytes"]


# ---- the two data paths ------------------------------------------------------------------------


class PerSampleLayouts(Dataset):
    """The straightforward data path: each sample's PNG decoded and colour-matched when asked for,
    and made float on the host."""

    def __init__(self, records: list[LayoutRecord], resolution: int):
        self.records, self.resolution = records, resolution

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        record = self.records[i]
        rgb, class_map, _ = load_layout(record.path, self.resolution)
        image = torch.tensor(rgb).permute(2, 0, 1).float().div(127.5).sub(1.0)  # PIL's array is read-only
        return image, torch.from_numpy(class_map).long(), record.label


def endless(loader: DataLoader) -> Iterator:
    """Batches for as long as asked, epoch after epoch."""
    epoch = 0
    while True:
        epoch += 1
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader


@dataclass
class TrainingPath:
    """One way of feeding and training a model: ``next_inputs`` gives a batch on the device,
    ``train_step`` takes one optimisation step on it."""

    name: str
    rt: Runtime
    next_inputs: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    step_on: Callable[[tuple[torch.Tensor, ...]], None]  # one step on given inputs: the model alone

    def train_step(self) -> None:
        self.step_on(self.next_inputs())


def fast_path(cfg: Config, dataset: CachedLayouts, name: str = "fast") -> TrainingPath:
    rt = setup_runtime(cfg)
    loader = batch_loader(
        dataset,
        cfg.training.batch_size,
        shuffle=True,
        seed=cfg.training.seed,
        num_workers=cfg.data.num_workers,
        pin_memory=rt.device.type == "cuda",
    )
    batches = endless(loader)
    model, optimizer, scaler = build_training(cfg, rt)
    step = make_train_step(maybe_compile(model, rt, log), optimizer, cfg, rt, scaler)

    def next_inputs():
        return to_model_inputs(next(batches), rt.device, rt.channels_last)

    def step_on(inputs):
        step(*inputs)  # the losses stay on the device, as in train()

    return TrainingPath(name, rt, next_inputs, step_on)


def straightforward_path(cfg: Config, dataset: CachedLayouts) -> TrainingPath:
    rt = setup_runtime(cfg)
    records = [dataset.cache.records[i] for i in dataset.indices]
    workers = cfg.data.num_workers
    loader = DataLoader(
        PerSampleLayouts(records, cfg.data.resolution),
        batch_size=cfg.training.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    batches = endless(loader)
    model, optimizer, scaler = build_training(cfg, rt)
    step = make_train_step(model, optimizer, cfg, rt, scaler)

    def next_inputs():
        return tuple(t.to(rt.device) for t in next(batches))

    def step_on(inputs):
        step(*inputs)["total"].item()

    return TrainingPath("straightforward", rt, next_inputs, step_on)


# ---- timing ------------------------------------------------------------------------------------


def timed_window(action: Callable[[], Any], steps: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        action()
    synchronize(device)
    return time.perf_counter() - start


def train_step_flops(cfg: Config) -> int:
    """FLOPs of one training step at the config's batch and resolution, counted once on the meta
    device (shapes only, nothing computed). The optimizer's element-wise work is not counted."""
    with torch.device("meta"):
        model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr)
    step = make_train_step(model, optimizer, cfg, Runtime(torch.device("meta")), None)
    r, b = cfg.data.resolution, cfg.training.batch_size
    inputs = (
        torch.empty(b, 3, r, r, device="meta"),
        torch.zeros(b, r, r, dtype=torch.long, device="meta"),
        torch.zeros(b, dtype=torch.long, device="meta"),
    )
    with FlopCounterMode(display=False) as counter:
        step(*inputs)
    return counter.get_total_flops()


def bench_model(key: str, args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Both paths for model ``key`` (V1 or V2): throughput, FLOP rate, peak memory."""
    fast_cfg = bench_config(key, args, work_dir)
    data = load_data(fast_cfg, log=log)
    whole = len(data.train) // args.batch_size * args.batch_size  # whole batches only: one shape to compile
    if whole == 0:
        raise ConfigError(f"bench: {len(data.train)} training layouts are fewer than one batch of {args.batch_size}")
    dataset = CachedLayouts(data.cache, data.train.indices[:whole])
    paths = [
        fast_path(fast_cfg, dataset),
        straightforward_path(bench_config(key, args, work_dir, STRAIGHTFORWARD), dataset),
        *(
            fast_path(bench_config(key, args, work_dir, overrides), dataset, name)
            for name, overrides in args.variants.items()
        ),
    ]
    device = paths[0].rt.device
    try:
        flops = train_step_flops(fast_cfg)
    except Exception as err:  # a side figure: never lose the timings of a one-off GPU run over it
        log(f"{key}: counting FLOPs failed ({type(err).__name__}: {err}); no TFLOP/s reported")
        flops = None
    per_window = max(1, args.steps // args.windows)
    # Data windows of more batches than the workers prefetch (8); the median of three drops the
    # first window, which drains what they had ready.
    data_steps = max(per_window, 16)
    results: dict[str, dict[str, Any]] = {}
    for path in paths:
        log(f"{key} {path.name} ({path.rt.describe()}): data pipeline, then {args.warmup} warm-up steps")
        path.next_inputs()  # starts the DataLoader workers
        data_seconds = [timed_window(path.next_inputs, data_steps, device) for _ in range(3)]
        reset_peak_memory(device)
        warm = timed_window(path.train_step, args.warmup, device)
        # The model alone: steps on one batch already on the device, so no data path at all.
        resident = path.next_inputs()
        model_seconds = [timed_window(functools.partial(path.step_on, resident), per_window, device) for _ in range(3)]
        results[path.name] = {
            "settings": path.rt.describe(),
            "data_images_per_s": data_steps * args.batch_size / statistics.median(data_seconds),
            "model_images_per_s": per_window * args.batch_size / statistics.median(model_seconds),
            "warmup_seconds": warm,
            "window_seconds": [],
        }
    for window in range(args.windows):  # alternating, so other load on the machine hits both alike
        for path in paths:
            reset_peak_memory(device)
            results[path.name]["window_seconds"].append(timed_window(path.train_step, per_window, device))
            results[path.name]["peak_memory_bytes"] = max(
                results[path.name].get("peak_memory_bytes", 0), path_peak(device)
            )
        log(
            f"{key} window {window + 1}/{args.windows}: "
            + ", ".join(
                f"{p.name} {per_window * args.batch_size / results[p.name]['window_seconds'][-1]:.1f} img/s"
                for p in paths
            )
        )
    for figures in results.values():
        steps_per_s = per_window / statistics.median(figures["window_seconds"])
        figures["train_images_per_s"] = steps_per_s * args.batch_size
        figures["tflops"] = steps_per_s * flops / 1e12 if flops else None
    for figures in results.values():
        figures["speedup"] = figures["train_images_per_s"] / results["straightforward"]["train_images_per_s"]
    if args.profile:
        for path in paths:
            profile_model(key, path, args, results[path.name])
    fast, straightforward = results.pop("fast"), results.pop("straightforward")
    return {
        "name": fast_cfg.name,
        "gflop_per_image": flops / args.batch_size / 1e9 if flops else None,
        "fast": fast,
        "straightforward": straightforward,
        "variants": results,  # the --variant paths, by their settings
        "speedup": fast["speedup"],
    }


def profile_model(key: str, path: TrainingPath, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """``--profile``: kernels of the path's model alone, on one batch already on the device."""
    log(f"{key} {path.name}: profiling {args.profile} steps")
    resident = path.next_inputs()
    try:
        figures["profile"] = profile_steps(lambda: path.step_on(resident), args.profile, path.rt.device)
    except Exception as err:  # a side figure: never lose the timings of a one-off GPU run over it
        log(f"{key} {path.name}: profiling failed ({type(err).__name__}: {err})")


# ---- report ------------------------------------------------------------------------------------


def rows(figures: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path name, figures) of one model: fast, straightforward, then the --variant paths."""
    return [
        ("fast", figures["fast"]),
        ("straightforward", figures["straightforward"]),
        *figures.get("variants", {}).items(),
    ]


def table(report: dict[str, Any]) -> str:
    s = report["settings"]
    width = max([16] + [len(name) for figures in report["models"].values() for name, _ in rows(figures)])
    lines = [
        f"ImgiNav training benchmark: {report['device']} ({report['device_name']}), torch {report['torch']}",
        f"{s['resolution']}x{s['resolution']}, batch {s['batch_size']}, {s['num_workers']} data workers "
        "(fast: threads, straightforward: DataLoader processes); "
        f"median of {s['windows']} windows x {s['steps_per_window']} steps after {s['warmup']} warm-up steps",
        f"peak memory: {report['peak_memory']}",
        "",
        f"{'model':<6} {'path':<{width}} {'settings':<30} {'train img/s':>11} {'TFLOP/s':>8} {'peak MiB':>9} "
        f"{'data img/s':>11} {'model-only img/s':>16} {'x straightf.':>12}",
    ]
    for model, figures in report["models"].items():
        for path, f in rows(figures):
            tflops = "n/a" if f["tflops"] is None else f"{f['tflops']:.3f}"
            lines.append(
                f"{model:<6} {path:<{width}} {f['settings']:<30} {f['train_images_per_s']:>11.1f} "
                f"{tflops:>8} {f['peak_memory_bytes'] / 2**20:>9.0f} {f['data_images_per_s']:>11.0f} "
                f"{f['model_images_per_s']:>16.1f} {f['speedup']:>11.2f}x"
            )
    per_model = ", ".join(f"{m} {f['speedup']:.2f}x" for m, f in report["models"].items())
    lines += [
        "",
        f"speedup, fast / straightforward (training images/s, data included): {per_model}; "
        f"overall (geometric mean) {report['speedup']:.2f}x",
    ]
    for model, figures in report["models"].items():
        for path, f in rows(figures):
            if "profile" in f:
                # GPU kernel time against wall time says how often the GPU waited for the host; on a
                # CPU, the operators' time is the wall time (plus the profiler's overhead)
                step_ms = (
                    1e3 * s["batch_size"] / f["model_images_per_s"] if report["device"].startswith("cuda") else None
                )
                lines += ["", profile_table(f"{model} {path}, the model alone", f["profile"], step_ms)]
    return "\n".join(lines)


def run(args: argparse.Namespace, work_dir: Path, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Both models; ``save`` gets the report after each, so a failure later keeps what was measured."""
    keys = args.models.split(",")
    cfg = bench_config(keys[0], args, work_dir)  # --set and --variant were checked by settle()
    device = setup_runtime(cfg).device
    report = {
        "speedup": None,  # the geometric mean of the models' speedups
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "peak_memory": MEMORY,
        "settings": {
            "resolution": args.resolution,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "windows": args.windows,
            "steps_per_window": max(1, args.steps // args.windows),
            "warmup": args.warmup,
            "num_workers": cfg.data.num_workers,
            "quick": args.quick,
            "overrides": args.set,
            "variants": args.variant,
            "profile_steps": args.profile,
        },
        "models": {},
    }
    for key in keys:
        report["models"][key] = bench_model(key, args, work_dir)
        speedups = [figures["speedup"] for figures in report["models"].values()]
        report["speedup"] = math.prod(speedups) ** (1 / len(speedups))
        save(report)
    return report


def main(args: argparse.Namespace, overrides: dict[str, Any], variants: dict[str, dict[str, Any]]) -> int:
    """``python -m imginav_core bench``: the options are defined with the command line."""
    args = settle(args, overrides, variants)

    def save(report: dict[str, Any]) -> None:
        report["seconds"] = time.perf_counter() - STARTED
        if args.json:
            write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="imginav-bench-") as scratch:
        report = run(args, args.work_dir or Path(scratch), save)
    print("\n" + table(report), flush=True)
    if args.json:
        log(f"figures written to {args.json}")
    return 0
