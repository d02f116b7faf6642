"""What each job of the study costs at a resolution (by default 512 x 512): the peak memory and
seconds of its process, as the stages record them, and the time the whole Phase 1.2's training
takes on this machine, scaled to the real set.

    python -m imginav_core bench --memory [--set KEY=VALUE ...] [--quick] [--json PATH] [--work-dir DIR]

A small study is planned (``plan``: ``--set`` goes to it, over ``WORKLOAD``) and run as its jobs
run it, each in a fresh process: ``train`` for each planned run (V1's builds the decoded cache, as
the first training job does), ``probe`` over both runs, and the analysis's ``run_study``. Each
stage records its own seconds and the process's peak memory (``runtime.StageMeter``): training
in the run's provenance.json (``sessions[-1].resources``), the probe in probe_metrics.json
(``timings``, each run's ``peak_memory_after``), the analysis in latent_metrics.json
(``resources``). This benchmark only reads them.

What is cut short is cut short by its settings, none of which changes a phase's peak, only how
long it lasts: one epoch, 2 and 4 denoiser steps, 2 DDIM steps, 64 generated layouts (one decoding
chunk), one scorer network, 16 layouts analysed. Most synthetic layouts go to the test split, so
that the probe's 128 layouts measured at once (its peak at 512 x 512) are filled while training
stays a few steps. Not filled: the 256-layout chunks of the copy index and the scorer's reference
(64 MB of class maps at 512 x 512), and the 256 latents per call of the denoiser's sampling and
held-out loss (64 and ~155 here; no gradients). What grows with the real set, the latents the
probe and the analysis keep, is reported per layout and scaled.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ...config import REPO_ROOT, load_config
from ...errors import ConfigError
from ...files import write_text_atomic
from ..analysis.settings import AnalysisSettings
from ..arms import read_study_file
from ..budget import REAL_LAYOUTS, REAL_TRAIN_SHARE
from . import STARTED, log

WORKLOAD = {
    # ~220 of 400 layouts are kept (not empty), 70 % of them for the test split: see above
    "data.synthetic_samples": 400,
    "data.test_fraction": 0.7,
    "training.epochs": 1,
    "probe.steps": 2,
    "probe.samples": 64,
    "probe.ddim_steps": 2,
    "probe.scorer_seeds": 1,
    "probe.checkpoint_every": 1,
    "analysis.max_images": 16,
}
QUICK = {"data.resolution": 64, "probe.samples": 8, "probe.width": 32, "probe.bootstrap": 20, "analysis.max_images": 8}
GB = 1e9


def plan_study(root: Path, overrides: dict[str, Any]):
    """The study the benchmark runs, planned afresh under ``root`` (one seed per arm). What an
    earlier benchmark left there but the synthetic set is removed: a cache, a finished run or a
    fitted scorer found there would be read, not built."""
    from ..plan import make_plan, write_plan

    if root.is_dir():
        for entry in root.iterdir():
            if entry.name != "synthetic":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    plan = make_plan(root, seeds=read_study_file().seeds[:1], settings=overrides)
    write_plan(plan, log)
    return plan


def run_stage(name: str, command: list[str], logs: Path) -> None:
    """``command`` (after ``python``) in a fresh process, its output in ``logs/NAME.log``."""
    log_path = logs / f"{name.replace(' ', '_')}.log"
    log(f"{name}: {' '.join(command)} (its log: {log_path})")
    started = time.perf_counter()
    with open(log_path, "w") as handle:
        done = subprocess.run([sys.executable, *command], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the benchmark's '{name}' failed (exit {done.returncode}):\n{log_path.read_text()[-3000:]}")
    log(f"{name}: done in {time.perf_counter() - started:.0f} s")


def training_figures(out, name: str) -> dict[str, Any]:
    """A run's session as its training recorded it, with its epochs (the metrics CSV) and its split."""
    with open(out.metrics_csv(name), newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys = ("epoch_seconds", "val_seconds", "train_images_per_s")
    return {
        **json.loads(out.provenance(name).read_text())["sessions"][-1]["resources"],
        "epochs": [{key: float(row[key]) for key in keys} for row in rows],
        "layouts": json.loads(out.split_summary(name).read_text())["layouts"],
    }


def probe_figures(out) -> dict[str, Any]:
    """The probe's seconds and peaks, its shared phases first, then each run's (named by its arm),
    and the bytes of the latents it keeps per training layout (the larger run's)."""
    probe = json.loads(out.probe_metrics.read_text())
    timings = probe["timings"]
    phases = {k: v for k, v in timings.items() if isinstance(v, (int, float)) and k != "total"}
    after = dict(timings["peak_memory_after"])
    for result in probe["experiments"].values():
        phases |= {
            f"{result['label']} {k}": v for k, v in result["timings"].items() if k not in ("total", "done_earlier")
        }
        after |= {f"{result['label']} {k}": v for k, v in result["peak_memory_after"].items()}
    # float32 latents: a VAE's mean and standard deviation, a deterministic encoder's one latent
    per_layout = [4 * math.prod(r["latent_shape"]) * (1 + r["variational"]) for r in probe["experiments"].values()]
    return {
        "seconds": timings["total"],
        "phases": phases,
        "peak_memory": timings["peak_memory"],
        "peak_memory_after": after,
        "latent_bytes_per_training_layout": max(per_layout),
        "latent_bytes_per_test_layout": min(per_layout),  # the analysis keeps one latent (the mean)
    }


def estimate(processes: dict[str, dict], study_configs: dict[str, Any], runs_per_arm: int) -> dict[str, float]:
    """The real set's training time from each arm's run: its steady epochs (all but the first, when
    there are two or more; else its one epoch, one-off costs included) scaled by the real training
    and validation layouts; the rest of a session (the model, samples, checkpoints) counted per
    epoch; the first epoch's excess (torch.compile) once per run. Decoding the real PNGs into the
    cache: the first run's data seconds per layout (drawing the synthetic PNGs included)."""
    minutes, first = 0.0, None
    for arm, cfg in study_configs.items():
        f = processes[f"training {arm}"]
        first = first or f
        epochs = f["epochs"][1:] or f["epochs"]
        images_per_s = statistics.median(e["train_images_per_s"] for e in epochs)
        val_per_layout = statistics.median(e["val_seconds"] for e in epochs) / f["layouts"]["val"]
        rest = f["seconds"] - sum(f["phases"].values())
        one_off = f["epochs"][0]["epoch_seconds"] - statistics.median(e["epoch_seconds"] for e in epochs)
        real_epoch = (
            REAL_LAYOUTS * REAL_TRAIN_SHARE / images_per_s
            + REAL_LAYOUTS * cfg.data.val_fraction * val_per_layout
            + rest / len(f["epochs"])
        )
        minutes += runs_per_arm * (one_off + cfg.training.epochs * real_epoch) / 60
    cached = sum(first["layouts"].values())
    return {"training_minutes": minutes, "cache_build_minutes": first["phases"]["data"] / cached * REAL_LAYOUTS / 60}


def run_benchmark(overrides: dict[str, Any], work_dir: Path, save) -> dict[str, Any]:
    import torch

    plan = plan_study(work_dir / "study", overrides)
    logs = work_dir / "logs"
    logs.mkdir(exist_ok=True)
    out, r = plan.outputs, next(iter(plan.configs.values())).data.resolution
    report = {"resolution": r, "settings": plan.settings, "torch": torch.__version__, "cpus": os.cpu_count()}
    report |= {"python": platform.python_version(), "processes": {}}
    for run in plan.runs:
        run_stage(f"training {run.arm}", ["-m", "imginav_core", "train", str(plan.config_path(run))], logs)
        report["processes"][f"training {run.arm}"] = training_figures(out, run.name)
        save(report)
    run_stage("probe", ["-m", "imginav_core", "probe", "--out", str(plan.root)], logs)
    report["processes"]["probe"] = probe = probe_figures(out)
    save(report)
    run_stage("analysis", ["-m", "imginav_core.study.perf.memory", str(plan.root)], logs)
    report["processes"]["analysis"] = json.loads(out.latent_metrics.read_text())["resources"]
    cache = [p for p in out.cache_root.rglob("*") if p.is_file() and out.scorer_cache not in p.parents]
    cached = sum(report["processes"][f"training {plan.runs[0].arm}"]["layouts"].values())
    study = read_study_file()
    configs = {label: load_config(arm.config) for label, arm in study.arms.items()}
    real_runs = len(study.arms) * len(study.seeds)
    report["real_set"] = {
        "layouts": REAL_LAYOUTS,
        "runs": real_runs,
        **estimate(report["processes"], configs, len(study.seeds)),
        "probe_latent_bytes": probe["latent_bytes_per_training_layout"] * REAL_LAYOUTS * REAL_TRAIN_SHARE,
        "analysis_latent_bytes": probe["latent_bytes_per_test_layout"] * AnalysisSettings().max_images * real_runs,
        "cache_bytes": sum(p.stat().st_size for p in cache) / cached * REAL_LAYOUTS,
    }
    save(report)
    return report


def peak_phase(figures: dict[str, Any]) -> str:
    """The first phase at whose end the process's peak resident size was reached (within 1 %: the
    allocator's slack grows it by a few pages later)."""
    peak = figures["peak_memory"]["resident_bytes"]
    reached = [p for p, m in figures["peak_memory_after"].items() if m["resident_bytes"] >= 0.99 * peak]
    return reached[0] if reached else "after its last phase"


def table(report: dict[str, Any]) -> str:
    r = report["resolution"]
    lines = [
        f"ImgiNav's jobs at {r} x {r}, as each stage recorded them: seconds per phase, and the process's peak "
        f"resident size at the end of each (GB; it only grows), on a GPU also the peak CUDA memory; "
        f"{report['cpus']} CPUs, torch {report['torch']}; settings {report['settings']}",
        "",
        f"{'process':<12} {'phase':<34} {'seconds':>8} {'peak GB':>8} {'CUDA GB':>8}",
    ]

    def row(process: str, phase: str, seconds: float, memory: dict[str, Any]) -> str:
        cuda = "" if memory.get("cuda_bytes") is None else f"{memory['cuda_bytes'] / GB:.2f}"
        return f"{process:<12} {phase[:34]:<34} {seconds:>8.1f} {memory['resident_bytes'] / GB:>8.2f} {cuda:>8}"

    for name, f in report["processes"].items():
        lines += [row(name, phase, s, f["peak_memory_after"][phase]) for phase, s in f["phases"].items()]
        lines += [row(name, "= the process", f["seconds"], f["peak_memory"]) + f"  reached in: {peak_phase(f)}", ""]
    real = report.get("real_set")
    if real:
        lines += [
            f"the real set ({real['layouts']:,} layouts, {real['runs']} runs): training {real['training_minutes']:.0f} "
            f"minutes here; decoding its PNGs into the cache about {real['cache_build_minutes']:.1f} minutes, "
            f"{real['cache_bytes'] / GB:.1f} GB on disk if as many are palette-pure as here",
            f"latents kept at the real size, beyond what this size shows: the probe "
            f"{real['probe_latent_bytes'] / GB:.2f} GB, the analysis {real['analysis_latent_bytes'] / GB:.2f} GB",
        ]
    return "\n".join(lines)


def main(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """``python -m imginav_core bench --memory``: the options are defined with the command line."""
    for option in ("steps", "windows", "warmup"):
        if getattr(args, option) is not None:
            raise ConfigError(
                f"bench --memory: --{option} belongs to the throughput benchmark; a stage is cut short by its "
                "settings (--set training.epochs=N, --set data.synthetic_samples=N, --set probe.steps=N)"
            )
    if args.variant or args.profile or args.models != "V1,V2":
        raise ConfigError("bench --memory: --variant, --profile and --models belong to the throughput benchmark")
    device = overrides.get("training.device")
    settings = {**WORKLOAD, **(QUICK if args.quick else {}), **overrides}
    if device:  # one device for every stage, unless given apart
        settings = {"probe.device": device, "analysis.device": device, **settings}

    def save(report: dict[str, Any]) -> None:
        report["seconds"] = time.perf_counter() - STARTED
        if args.json:
            write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")

    with tempfile.TemporaryDirectory(prefix="imginav-memory-") as scratch:
        report = run_benchmark(settings, Path(args.work_dir or scratch).resolve(), save)
    print("\n" + table(report), flush=True)
    if args.json:
        log(f"figures written to {args.json}")
    return 0


def analysis(root: str) -> None:
    """The analysis's measuring (``run_study``) of the study under ``root``, as its job runs it."""
    from ..analysis.study import run_study
    from ..notebooks import analysis_inputs

    inputs = analysis_inputs(root)
    run_study(inputs.arms.arms, inputs.plan.root, inputs.plan.analysis)


if __name__ == "__main__":  # the analysis's process: OUTPUT_ROOT
    analysis(sys.argv[1])
