"""How much memory each phase of the study takes at a given resolution (by default 512 x 512).

    python -m imginav_core bench --memory [--set data.resolution=512] [--layouts N] [--steps K]
                                          [--quick] [--json PATH] [--work-dir DIR]

The study's processes are run the way its jobs run them, each in a fresh Python process, on
synthetic layouts generated at the resolution: the decoded cache's build (the first training job
builds it), a short training run of V1 and of V2 (``train()``, batch 16, stopped after K steps
and K validation batches), the diffusion probe on both runs (``run_probe``: the scorer's feature
networks, the copy index, encoding, the denoiser's training, sampling, decoding, scoring, ...) and
the analysis (``run_study``: the reconstruction pass, latent noise, nearest-neighbour midpoints,
interpolation, examples). Inside each process the functions that make up its phases are wrapped
by a meter (``PhaseMeter``): on entering and leaving one it reads the process's peak resident size
(``VmHWM`` of ``/proc/self/status``) and resets it (``/proc/self/clear_refs``), and on a GPU the
peak of ``torch.cuda.max_memory_allocated``; so each phase's figure is the peak the process
reached while in it, after what really came before it, which is what a batch system sees (LSF's
-M limits the resident size of each of the job's processes).

Sizes: the models, batch sizes and chunks are the study's own (the configs, the probe's and the
analysis's defaults). What grows with the number of layouts up to a cap (the scorer's 256-layout
chunks, the probe's 64-layout encoding batches and 128 layouts measured at once) is filled by
generating enough layouts (``--layouts``: about 55 % are kept, non-empty, and 70 % of those
train); what the probe keeps per training layout (its encoded latents) is reported per layout and
scaled to the real training split. What is cut short: training (K steps), the denoiser's budgets
(2 and 3 steps), DDIM steps (2), the generated layouts (64 per run), the scorer's feature
networks (one, for one epoch, instead of three for up to twelve) and the layouts the analysis
measures (16) -- none of which changes a phase's peak, only how long it lasts.

On a CPU the model's activations are in the process's resident size; on a GPU they are on the
device (the CUDA column) and the process holds the CUDA runtime instead: the resident figures of
a GPU job are to be measured on one.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...files import write_text_atomic
from . import STARTED, log

PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
REST = "the rest (imports, setup, writing files)"
REAL_LAYOUTS = 27_897  # usable layouts of the real data set
REAL_TRAINING = 19_500  # about 70 % of them in the training split
QUICK_RESOLUTION, QUICK_LAYOUTS = 64, 200
DEFAULT_LAYOUTS = 1200  # ~660 kept at 512: ~460 training (fills the 256-layout chunks), ~130 test (fills 128)
TRAINING_STEPS = 3
ARMS = ("V1", "V2")


# ---- the meter ----------------------------------------------------------------------------------


def status_bytes(key: str) -> int | None:
    """``VmHWM`` / ``VmRSS`` of this process in bytes; None where there is no /proc."""
    try:
        with open(PROC_STATUS) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class PhaseFigures:
    """One phase of one process: the peak resident size while in it (whole process), how far it
    rose above the resident size on entering, the peak CUDA memory, its seconds and entries."""

    peak_bytes: int = 0
    rise_bytes: int = 0
    cuda_peak_bytes: int | None = None
    seconds: float = 0.0
    entered: int = 0
    batch: str = ""  # the batch or chunk sizes the phase ran with


class PhaseMeter:
    """Per-phase peaks of this process. ``enter(phase)`` / ``leave()`` nest: the time in a phase
    entered from another belongs to the inner one only. With ``/proc/self/clear_refs`` (Linux) the
    peak is reset at each switch, so each phase gets the peak of its own time; without it every
    figure is the peak since the process started (``resettable`` False)."""

    def __init__(self) -> None:
        self.stack = [REST]
        self.phases: dict[str, PhaseFigures] = {REST: PhaseFigures()}
        self.resettable = PROC_CLEAR_REFS.exists()
        self._reset()

    def _cuda(self):
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda
        return None

    def _fold(self) -> None:
        """Credit the peak since the last switch to the phase now running."""
        figures = self.phases.setdefault(self.stack[-1], PhaseFigures())
        peak = status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        figures.peak_bytes = max(figures.peak_bytes, peak)
        figures.rise_bytes = max(figures.rise_bytes, peak - self._entry_rss)
        figures.seconds += time.perf_counter() - self._since
        cuda = self._cuda()
        if cuda is not None:
            figures.cuda_peak_bytes = max(figures.cuda_peak_bytes or 0, cuda.max_memory_allocated())

    def _reset(self) -> None:
        if self.resettable:
            try:
                PROC_CLEAR_REFS.write_text("5")  # Linux: "5" resets VmHWM to the current RSS
            except OSError:
                self.resettable = False
        cuda = self._cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        self._entry_rss = status_bytes("VmRSS") or 0
        self._since = time.perf_counter()

    def enter(self, phase: str) -> None:
        self._fold()
        self.stack.append(phase)
        self.phases.setdefault(phase, PhaseFigures()).entered += 1
        self._reset()

    def leave(self) -> None:
        self._fold()
        self.stack.pop()
        self._reset()

    def finish(self) -> dict[str, PhaseFigures]:
        self._fold()
        self._reset()
        return self.phases

    def wrap(self, module, name: str, phase: str, batch: str = "") -> None:
        """Replace ``module.name`` (a function, or a generator function: then each step of it)
        by one that runs in ``phase``."""
        original = getattr(module, name, None)
        if not callable(original):
            raise RuntimeError(
                f"the memory benchmark measures {module.__name__}.{name} as '{phase}', which is no longer there"
            )
        self.phases.setdefault(phase, PhaseFigures()).batch = batch
        meter = self
        if inspect.isgeneratorfunction(original):

            @functools.wraps(original)
            def stepped(*args, **kwargs):
                steps = original(*args, **kwargs)
                while True:
                    meter.enter(phase)
                    try:
                        item = next(steps)
                    except StopIteration:
                        return
                    finally:
                        meter.leave()
                    yield item

            setattr(module, name, stepped)
            return

        @functools.wraps(original)
        def metered(*args, **kwargs):
            meter.enter(phase)
            try:
                return original(*args, **kwargs)
            finally:
                meter.leave()

        setattr(module, name, metered)


# ---- what is measured ---------------------------------------------------------------------------


@dataclass
class Workload:
    """Where and at what size: passed to each measured process as JSON."""

    work_dir: str
    resolution: int
    layouts: int  # synthetic layouts generated (about a quarter empty, dropped)
    steps: int  # training steps (and validation batches) per arm
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, for every config
    quick: bool = False

    @property
    def root(self) -> str:
        """The output root of the measured study: runs, caches, the synthetic set."""
        return str(Path(self.work_dir) / "study")

    def start_afresh(self) -> None:
        """Remove what an earlier benchmark left in the output root but the synthetic set: a cache,
        a finished run or a fitted scorer found there would be read instead of built, and their
        phases not measured."""
        root = Path(self.root)
        if root.is_dir():
            for entry in root.iterdir():
                if entry.name != "synthetic":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def config(self, arm: str):
        from ...config import load_config
        from ..arms import read_study_file

        EXPERIMENTS = {label: arm.config for label, arm in read_study_file().arms.items()}

        return load_config(
            EXPERIMENTS[arm],
            {
                **self.overrides,
                "output_root": self.root,
                "data.resolution": self.resolution,
                "data.synthetic_samples": self.layouts,
                "training.epochs": 1,
            },
        )

    def run_names(self) -> list[str]:
        return [self.config(arm).name for arm in ARMS]

    def probe_settings(self):
        from ..probe.run import DECODE_CHUNK
        from ..probe.settings import ProbeSettings

        device = self.overrides.get("training.device", "auto")
        # Memory does not depend on how many steps: 2 and 3 denoiser steps, 2 DDIM steps; one decode
        # chunk; one scorer network (the study's 3 are trained and used one after another).
        return ProbeSettings(
            steps=2,
            second_steps=3,
            samples=8 if self.quick else DECODE_CHUNK,
            ddim_steps=2,
            scorer_seeds=1,
            checkpoint_every=1,
            bootstrap=20 if self.quick else 200,
            device=device,
            **({"width": 32} if self.quick else {}),
        )

    def analysis_settings(self):
        from ..analysis.study import AnalysisSettings

        device = self.overrides.get("training.device", "auto")
        return AnalysisSettings(max_images=8 if self.quick else 16, device=device)


def _first_batches(loader, count: int):
    """``loader`` cut to its first ``count`` batches (its sampler still there for set_epoch)."""
    import itertools

    class FirstBatches:
        sampler = loader.sampler

        def __len__(self) -> int:
            return min(len(loader), count)

        def __iter__(self):
            return itertools.islice(iter(loader), count)

    return FirstBatches()


def measure_cache(work: Workload, meter: PhaseMeter) -> dict[str, Any]:
    """Decode the synthetic set into the cache, as the first training job does."""
    from ...data import batches

    cfg = work.config("V1")
    meter.wrap(batches, "build_cache", "cache build", f"{os.cpu_count()} CPUs: up to 8 decoding processes")
    meter.wrap(batches, "split_records", "data: the split")
    data = batches.load_data(cfg, log=log)
    size = sum(p.stat().st_size for p in data.cache.folder.iterdir() if p.is_file())
    return {
        "layouts_cached": len(data.cache),
        "cache_bytes": size,
        "cache_bytes_per_1000": size / len(data.cache) * 1000,
        "off_palette_layouts": len(data.cache.rgb_rows),
        "training_layouts": len(data.train),
        "test_layouts": len(data.test),
        # the decoding processes: each a fork of this one (ru_maxrss of the largest, in KB on Linux)
        "largest_worker_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def measure_training(arm: str, work: Workload, meter: PhaseMeter) -> dict[str, Any]:
    """``train()`` for one epoch cut to ``work.steps`` steps and validation batches."""
    from ...training import loop

    cfg = work.config(arm)
    loaders = loop._loaders

    def first_batches(*args, **kwargs):
        return tuple(_first_batches(loader, work.steps) for loader in loaders(*args, **kwargs))

    loop._loaders = first_batches
    batch = f"batch {cfg.training.batch_size}, {cfg.data.num_workers} loader threads"
    meter.wrap(loop, "_load_data", "data: open the cache, split")
    meter.wrap(loop, "train_one_epoch", "training steps", batch)
    meter.wrap(loop, "evaluate", "validation", f"batch {cfg.training.batch_size}")
    meter.wrap(loop, "comparison_grid", "sample grid")
    loop.train(cfg, log=log)
    return {"steps": work.steps, "batch_size": cfg.training.batch_size}


def measure_probe(work: Workload, meter: PhaseMeter) -> dict[str, Any]:
    """The diffusion probe on V2's run, the larger (a VAE's latents carry a standard deviation
    too): the probe takes a study's runs one after another and keeps only each run's figures, so
    one run's peak is the job's (and at 512 x 512 on a CPU a run's probe takes 7-12 minutes)."""
    from ...outputs import Outputs
    from ...scoring import features
    from ..probe import run

    cfg = work.config("V1")
    settings = work.probe_settings()
    encoded = []

    def record(latents):
        held = latents.mean.nbytes + (latents.std.nbytes if latents.std is not None else 0)
        encoded.append({"layouts": len(latents), "bytes": held})
        return latents

    encode = run.encode_layouts
    run.encode_layouts = lambda *args, **kwargs: record(encode(*args, **kwargs))
    # One epoch of the feature network: its memory is that of a batch and of the 256-layout chunks
    # its targets are counted in; at 512 x 512 on a CPU its 12 epochs take 8 minutes a network.
    features.epochs_for = lambda n: 1
    sample_batch = inspect.signature(run.sample_latents).parameters["batch_size"].default
    embed = features.embed_batch_size(work.resolution)
    meter.wrap(run, "study_scorers", "scorer fit", f"{settings.scorer_seeds} networks, batch {features.BATCH_SIZE}")
    meter.wrap(run, "training_copies", "copy index")
    meter.wrap(run, "encode_layouts", "encoding", f"batch {run.model_batch(work.resolution)}")
    meter.wrap(run, "train_denoiser", "denoiser training", f"batch {settings.batch_size}, width {settings.width}")
    meter.wrap(run, "sample_latents", "sampling", f"batch {min(settings.samples, sample_batch)}")
    meter.wrap(run, "heldout_losses", "held-out loss")
    model_batch = run.model_batch(work.resolution)
    meter.wrap(run, "decoded_layouts", "decoding", f"chunk {run.DECODE_CHUNK}, {model_batch} per model call")
    meter.wrap(run, "describe_layouts", "scoring", f"embedding batch {embed}")
    meter.wrap(run, "_score_generated", "scoring", f"embedding batch {embed}")
    meter.wrap(run, "_reconstructions", "reconstructions", f"chunk {run.DECODE_CHUNK}, {model_batch} per model call")
    meter.wrap(run, "_diffusability", "diffusability", f"{run.MEASURE_LIMIT} layouts, {model_batch} per model call")
    run.run_probe(Outputs(work.root, cfg.phase), work.run_names()[-1:], settings, log=log)
    training = [e for e in encoded if e["layouts"] > 0]
    per_layout = max(e["bytes"] / e["layouts"] for e in training)
    return {
        "settings": settings.to_json(),
        "encoded": encoded,
        "latent_bytes_per_training_layout": per_layout,
        "latent_bytes_at_real_size": per_layout * REAL_TRAINING,
    }


def measure_analysis(work: Workload, meter: PhaseMeter) -> dict[str, Any]:
    """The analysis of both runs (the probe's scorer network from its cache)."""
    from ...outputs import Outputs
    from ..analysis import study
    from ..analysis.study import AnalysisSettings
    from ..arms import read_study_file
    from ..runs import load_runs

    cfg = work.config("V1")
    settings = work.analysis_settings()
    chunk = f"chunk {study.chunk_size(settings, work.resolution)}"
    meter.wrap(study, "load_data", "data: open the cache, split")
    meter.wrap(study, "study_scorer", "scorer (from the probe's cache)")
    meter.wrap(study, "measure_model", "reconstruction pass", chunk)
    meter.wrap(study, "noise_robustness", "latent noise", chunk)
    meter.wrap(study, "_nearest_neighbour_midpoints", "nearest-neighbour midpoints", chunk)
    meter.wrap(study, "_interpolate", "interpolation", chunk)
    meter.wrap(study, "_examples", "examples", chunk)
    runs, _ = load_runs(Outputs(work.root, cfg.phase), work.run_names())
    measured = study.run_study({"V1": [runs[0]], "V2": [runs[1]]}, work.root, settings, log=log)
    # Kept per run until the end: its test latents (the rest, per-image numbers and small frames, is
    # a few MB): what grows with the layouts measured (max_images) and the runs of the plan.
    per_layout = max(r.latents.nbytes for r in measured.models) / len(measured.positions)
    study = read_study_file()
    real_runs, real_images = len(study.arms) * len(study.seeds), AnalysisSettings().max_images
    return {
        "settings": asdict(settings),
        "latent_bytes_per_layout_and_run": per_layout,
        "real_runs": real_runs,
        "latent_bytes_at_real_size": per_layout * real_images * real_runs,
    }


PROCESSES: dict[str, Callable[[Workload, PhaseMeter], dict[str, Any]]] = {
    "cache": measure_cache,
    "training V1": functools.partial(measure_training, "V1"),
    "training V2": functools.partial(measure_training, "V2"),
    "probe": measure_probe,
    "analysis": measure_analysis,
}


def measure(name: str, work: Workload, result: Path) -> None:
    """In the measured process: run ``name``, write its phases' figures to ``result``."""
    meter = PhaseMeter()
    started = time.perf_counter()
    details = PROCESSES[name](work, meter)
    phases = meter.finish()
    torch = sys.modules.get("torch")
    report = {
        "process": name,
        "seconds": time.perf_counter() - started,
        "peak_bytes": max(f.peak_bytes for f in phases.values()),
        "peak_reset_per_phase": meter.resettable,
        "device": str(_device(torch)),
        "phases": {phase: asdict(f) for phase, f in phases.items() if f.entered or phase == REST},
        "details": details,
    }
    write_text_atomic(result, json.dumps(report, indent=1) + "\n")


def _device(torch) -> str:
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.get_device_name()
    return "cpu"


# ---- the benchmark ---------------------------------------------------------------------------------


def run_process(name: str, work: Workload) -> dict[str, Any]:
    """``name`` in a fresh Python process; its figures, or a RuntimeError with its log's end."""
    folder = Path(work.work_dir) / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    slug = name.replace(" ", "_")
    result, log_path = folder / f"{slug}.json", folder / f"{slug}.log"
    result.unlink(missing_ok=True)
    command = [sys.executable, "-m", "imginav_core.study.perf.memory", name, json.dumps(asdict(work)), str(result)]
    log(f"{name}: measuring in a fresh process (its log: {log_path})")
    with open(log_path, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ})
    if done.returncode != 0 or not result.is_file():
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"the memory benchmark's '{name}' process failed (exit {done.returncode}):\n{tail}")
    figures = json.loads(result.read_text())
    log(f"{name}: peak {figures['peak_bytes'] / 1e9:.2f} GB resident, {figures['seconds']:.0f} s")
    return figures


def run_benchmark(work: Workload, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import torch

    from ...data.batches import manifest_path

    work.start_afresh()
    manifest_path(work.config("V1"), log=log)  # the synthetic set, generated once, outside the measured processes
    report = {
        "resolution": work.resolution,
        "synthetic_layouts": work.layouts,
        "training_steps": work.steps,
        "quick": work.quick,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "peak": "VmHWM of the process while in each phase (reset per phase); on a GPU also "
        "torch.cuda.max_memory_allocated",
        "processes": {},
    }
    for name in PROCESSES:
        report["processes"][name] = run_process(name, work)
        save(report)
    return report


def gigabytes(value: int | float | None) -> str:
    return "" if value is None else f"{value / 1e9:.2f}"


def table(report: dict[str, Any]) -> str:
    r = report["resolution"]
    lines = [
        f"ImgiNav memory benchmark at {r} x {r}: peak resident size per phase (GB; the whole process, "
        "while in the phase), its rise above the size on entering it, the peak CUDA memory on a GPU",
        f"{report['synthetic_layouts']} synthetic layouts generated; training cut to {report['training_steps']} "
        f"steps per arm; {report['cpus']} CPUs, torch {report['torch']}",
        "",
        f"{'process':<12} {'phase':<34} {'peak GB':>8} {'rise GB':>8} {'CUDA GB':>8} {'s':>7}  batch",
    ]
    for name, process in report["processes"].items():
        for phase, f in process["phases"].items():
            lines.append(
                f"{name:<12} {phase[:34]:<34} {gigabytes(f['peak_bytes']):>8} {gigabytes(f['rise_bytes']):>8} "
                f"{gigabytes(f['cuda_peak_bytes']):>8} {f['seconds']:>7.1f}  {f['batch']}"
            )
        lines.append(f"{name:<12} {'= the process':<34} {gigabytes(process['peak_bytes']):>8}")
        lines.append("")
    cache = report["processes"].get("cache", {}).get("details")
    if cache:
        per_1000 = cache["cache_bytes_per_1000"]
        lines.append(
            f"cache on disk: {per_1000 / 1e9:.3f} GB per 1,000 layouts ({cache['off_palette_layouts']} of "
            f"{cache['layouts_cached']} with off-palette pixels), so {per_1000 * REAL_LAYOUTS / 1000 / 1e9:.1f} GB "
            f"for the {REAL_LAYOUTS:,} real layouts if as many are palette-pure; each decoding process peaked at "
            f"{gigabytes(cache['largest_worker_bytes'])} GB"
        )
    probe = report["processes"].get("probe", {}).get("details")
    if probe:
        per_layout = probe["latent_bytes_per_training_layout"]
        lines.append(
            f"the probe holds {per_layout / 1e3:.0f} KB of encoded latents per training layout (the larger "
            f"arm): {probe['latent_bytes_at_real_size'] / 1e9:.2f} GB at the real {REAL_TRAINING:,} training "
            "layouts, beyond what this size shows"
        )
    analysis = report["processes"].get("analysis", {}).get("details")
    if analysis and "latent_bytes_at_real_size" in analysis:
        lines.append(
            f"the analysis keeps {analysis['latent_bytes_per_layout_and_run'] / 1e3:.0f} KB of latents per "
            f"measured layout and run: {analysis['latent_bytes_at_real_size'] / 1e9:.2f} GB for "
            f"{analysis['real_runs']} runs of 512 layouts, beyond what this size shows"
        )
    return "\n".join(lines)


def settle(args: argparse.Namespace, overrides: dict[str, Any]) -> Workload:
    """The workload the command line asks for, checked before anything runs."""
    from ...config import load_config
    from ..arms import read_study_file

    EXPERIMENTS = {label: arm.config for label, arm in read_study_file().arms.items()}

    for option in ("windows", "warmup"):
        if getattr(args, option) is not None:
            raise ConfigError(f"bench --memory: --{option} times the throughput benchmark; it has no use here")
    if args.variant or args.profile:
        raise ConfigError("bench --memory: --variant and --profile belong to the throughput benchmark")
    if args.models != "V1,V2":
        raise ConfigError("bench --memory measures both arms (the probe and the analysis compare them): drop --models")
    overrides = dict(overrides)
    resolution = overrides.pop("data.resolution", QUICK_RESOLUTION if args.quick else None)
    layouts = args.layouts or (QUICK_LAYOUTS if args.quick else DEFAULT_LAYOUTS)
    steps = args.steps or (1 if args.quick else TRAINING_STEPS)
    base = load_config(EXPERIMENTS["V1"], {**overrides, **({"data.resolution": resolution} if resolution else {})})
    if layouts < 40 or steps < 1:
        raise ConfigError("bench --memory: --layouts must be >= 40 (a few of each split) and --steps >= 1")
    work_dir = Path(args.work_dir) if args.work_dir else None
    return Workload(
        work_dir=str(work_dir.resolve()) if work_dir else "",
        resolution=base.data.resolution,
        layouts=layouts,
        steps=steps,
        overrides=overrides,
        quick=args.quick,
    )


def main(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """``python -m imginav_core bench --memory``: the options are defined with the command line."""
    work = settle(args, overrides)

    def save(report: dict[str, Any]) -> None:
        report["seconds"] = time.perf_counter() - STARTED
        if args.json:
            write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")

    scratch = None
    if not work.work_dir:
        scratch = tempfile.mkdtemp(prefix="imginav-memory-")
        work.work_dir = scratch
    try:
        report = run_benchmark(work, save)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n" + table(report), flush=True)
    if args.json:
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":  # one measured process: NAME WORKLOAD_JSON RESULT_PATH
    measure(sys.argv[1], Workload(**json.loads(sys.argv[2])), Path(sys.argv[3]))
