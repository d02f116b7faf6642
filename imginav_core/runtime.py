"""Where and how a run executes: what "auto" means for the device, the precision, the memory
format and torch.compile, and the rank of a distributed (torchrun) process. Training, the
analysis and the benchmark all ask here, so the three agree. And what a stage of the study cost:
its seconds and peak memory (``StageMeter``), which each stage records in its results.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .config import REPO_ROOT, Config
from .errors import ConfigError


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        """e.g. ``bf16, channels_last, compiled``."""
        amp = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return ", ".join(
            [amp, "channels_last" if self.channels_last else "contiguous", "compiled" if self.compile else "eager"]
        )


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock time covers it (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (Linux: the avx512_bf16 or amx_bf16 flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def resolve_device(name: str, where: str) -> torch.device:
    """``auto``: CUDA when a GPU is visible, else the CPU. A CUDA device asked for but not visible
    is an error naming ``where`` the setting came from."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{where} = {name!r} but no CUDA device is visible (use auto or cpu)")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {torch.get_num_threads()} threads"


def provenance(rt: Runtime) -> dict:
    """What produced a run, as its provenance.json records it for every (re)start: the code's
    commit, the versions, the machine and the numerical recipe. Two runs compared by the study
    should agree on the recipe."""
    import datetime
    import socket
    import subprocess
    import sys

    root = REPO_ROOT

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    amp = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16 (loss scaling)"}[rt.amp_dtype]
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD") or "unknown (not a git checkout)",
        "git_uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if rt.device.type == "cuda" else None,
        "device": device_name(rt.device),
        "precision": amp,
        "memory_format": "channels_last" if rt.channels_last else "contiguous",
        "compile": rt.compile,
        "world_size": rt.world,
        "host": socket.gethostname(),
    }


def auto_precision(cuda: bool) -> str:
    """What ``training.amp: auto`` means. On GPUs fp16 with loss scaling, on every card: the V100s
    (V1's queue) have no bf16, and the two arms must share one numerical recipe, or a difference
    between them could be the recipe's (the analysis flags runs whose provenance.json differ).
    Ampere and later run fp16 on the same tensor cores as bf16, so the cost should be the loss
    scaler's bookkeeping (not yet measured on a GPU: `bench --variant training.amp=bf16` does).
    ``training.amp: bf16`` remains for runs not compared with a V100's. CPUs: bf16 with
    AVX512-BF16 or AMX (about 2x, measured by the benchmark), else float32."""
    if cuda:
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "off"


def setup_runtime(cfg: Config) -> Runtime:
    """Device, distributed rank and the speed settings (what "auto" means is below)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(cfg.training.device, f"{cfg.source}: training.device")
    if device.type == "cuda" and device.index is None:  # torchrun: each process its own GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    cuda = device.type == "cuda"
    if cuda:  # the shapes are fixed: cuDNN times its convolution algorithms once and keeps the fastest
        torch.backends.cudnn.benchmark = True
    amp = auto_precision(cuda) if cfg.training.amp == "auto" else cfg.training.amp
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    # "auto": channels_last on CUDA, where cuDNN's tensor-core convolutions work in NHWC. On a CPU
    # only in float32, where oneDNN ran the step 1.35x faster in channels_last. In bf16 it ran
    # 1.17x (64 px) and 1.2x (128 px) slower, 1.09x faster at 256 px: CPUs train at the small
    # sizes (bench --variant training.channels_last=on, 2-core EPYC).
    # torch.compile on CUDA only: on the CPU its gain was within noise and its warm-up costs tens
    # of seconds per run.
    channels_last = {"on": True, "off": False, "auto": cuda or amp_dtype is None}[cfg.training.channels_last]
    compiled = {"on": True, "off": False, "auto": cuda}[cfg.training.compile]
    return Runtime(device, rank, world, amp_dtype, channels_last, compiled)


def maybe_compile(model: torch.nn.Module, rt: Runtime, log: Callable[[str], None]) -> torch.nn.Module:
    """``torch.compile(model)`` when the runtime says so, else the model itself."""
    if not rt.compile:
        return model
    # Compiling happens at the first call, so a machine without what inductor needs (a C++
    # compiler, Triton) would fail mid-step: let Dynamo run such code eagerly, with a warning.
    torch._dynamo.config.suppress_errors = True
    try:
        return torch.compile(model)
    except Exception as err:  # an unsupported Python or platform fails here already
        log(f"torch.compile unavailable ({type(err).__name__}: {err}); training eagerly")
        return model


# ---- what a stage cost ------------------------------------------------------------------------------


def peak_memory(device: torch.device | None = None) -> dict[str, int | None]:
    """This process's peak memory so far, in bytes: its resident size (``VmHWM``; ``ru_maxrss`` where
    there is no /proc), what LSF's -M limits, and on a CUDA device the most PyTorch had allocated
    there (None elsewhere). Never reset here, so it only grows."""
    try:
        with open("/proc/self/status") as handle:
            resident = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    cuda = device is not None and device.type == "cuda"
    return {
        "resident_bytes": resident,
        "cuda_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
    }


class StageMeter(dict):
    """Seconds per phase of a stage (``with meter("validation"): ...``, or ``meter.add(phase,
    seconds)``), summed over the times it is entered, and the process's peak memory at the end of
    each phase (``peaks``). The peak only grows, so the first phase whose reading reaches the
    stage's peak is the one it was reached in (or before). Training records ``resources()`` in
    provenance.json, the probe in probe_metrics.json's timings, the analysis in latent_metrics.json."""

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__()
        self.device = device
        self.peaks: dict[str, dict[str, int | None]] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device is not None:
                synchronize(self.device)  # the device's queued work belongs to this phase
            self.add(phase, time.perf_counter() - started)

    def add(self, phase: str, seconds: float) -> None:
        self[phase] = self.get(phase, 0.0) + seconds
        self.peaks[phase] = peak_memory(self.device)

    def line(self) -> str:
        return ", ".join(f"{phase} {seconds:.1f}" for phase, seconds in self.items())

    def resources(self) -> dict:
        """The stage's seconds so far, its phases' seconds, the peak memory now and after each phase."""
        return {
            "seconds": time.perf_counter() - self.started,
            "phases": dict(self),
            "peak_memory": peak_memory(self.device),
            "peak_memory_after": dict(self.peaks),
        }
