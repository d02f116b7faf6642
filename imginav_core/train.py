"""The training loop, top to bottom: data, model, resume, then per epoch train -> evaluate ->
best.pt -> samples -> last.pt -> metrics CSV -> early stopping.

Outputs of experiment NAME under ``output_root``:
    experiments/NAME/NAME_metrics.csv   one row per epoch (copied to <phase>/NAME_metrics.csv)
    experiments/NAME/last.pt, best.pt   weights, optimizer, epoch, RNG states, metrics history
    experiments/NAME/config.yaml        the configuration used
    <phase>/samples/NAME_epoch_NNN_comparison.png

Running the same experiment again resumes from ``last.pt``. Each epoch's shuffle and VAE noise
are drawn from ``(seed, epoch)`` alone, so a resumed run ends exactly where an uninterrupted
one does: bit for bit on the CPU with the same number of threads (the order of floating-point
sums follows it); on a GPU close but not bit for bit, its kernels may sum in any order. Under
``torchrun`` the same code trains data-parallel (one process per GPU).

A run killed at any moment (``kill -9``: wall time, pre-emption) loses at most the epoch in
progress: every file is written whole or not at all, ``last.pt`` is written after everything
else an epoch produces except the metrics CSV, and a restarted run rewrites the CSV from
``last.pt``. The CSV's ``status`` column says how the run ended: ``completed``,
``early_stopped``, ``stopped_non_finite``, or ``running`` on the last row of a run that is still
going or was killed. One process at a time trains an experiment (a lock beside its run folder).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from .atomic import remove_leftovers, write_text_atomic
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, ConfigError, flatten
from .data.batches import batch_loader, load_data, to_model_inputs
from .data.cache import LayoutReadError
from .data.manifest import ManifestError
from .faults import kill_point
from .locks import LockHeldError, exclusive_lock
from .losses import TERMS, compute_losses
from .metrics import MetricSums
from .model import build_model
from .progress import progress
from .samples import comparison_grid, pick_samples, save_png

# Keys that may change between the interrupted run and its resumption: where and how fast it
# runs, not what it computes.
RESUMABLE_CHANGES = {
    "output_root", "training.epochs", "training.device", "training.compile", "training.channels_last",
    "training.sample_interval", "data.num_workers", "data.cache_dir", "data.manifest",
}

LOSS_COLUMNS = ["total"] + [name for term in TERMS for name in (term, f"{term}_weighted")]
# Wall-clock columns: epoch_seconds is the training pass, val_seconds the validation pass. They
# are the only ones that differ between otherwise identical runs.
TIMING_COLUMNS = ["epoch_seconds", "train_images_per_s", "val_seconds"]
COLUMNS = (
    ["epoch"]
    + [f"train_{c}" for c in LOSS_COLUMNS]
    + [f"val_{c}" for c in LOSS_COLUMNS]
    + ["val_psnr", "val_miou", "val_pixel_accuracy", "val_classification_accuracy", "lr"]
    + TIMING_COLUMNS
    + ["is_best", "status"]
)


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or inf; the message names the epoch, step and loss terms."""


class ResumeError(ValueError):
    """``last.pt`` belongs to a differently configured run."""


class RunInProgressError(RuntimeError):
    """Another process is training the same experiment into the same run folder."""


# Errors that say what to fix: the command lines (python -m imginav_core train, the workflow's
# train) print them as a message, not a traceback, in the job's log.
STOPS: tuple[type[Exception], ...] = (ConfigError, ManifestError, LayoutReadError, CheckpointError,
                                      NonFiniteLossError, ResumeError, RunInProgressError)


# ---- where and how the run executes ------------------------------------------------------

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
        raise RuntimeError(f"{where} = {name!r} but no CUDA device is visible")
    return torch.device(name)


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
    amp = cfg.training.amp
    if amp == "auto":
        # bf16 wherever the hardware computes it natively: Ampere and later GPUs, and CPUs with
        # AVX512-BF16 or AMX (about 2x here, measured by imginav_core.bench); fp16 with loss scaling
        # on older GPUs (V100); plain float32 on other CPUs, where emulated bf16 is slower.
        if cuda:
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            amp = "bf16" if cpu_has_native_bf16() else "off"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    # "auto": channels_last on CUDA, where cuDNN's tensor-core convolutions work in NHWC. On a CPU
    # only in float32, where oneDNN ran the step 1.35x faster in channels_last. In bf16 it ran
    # 1.17x (64 px) and 1.2x (128 px) slower, 1.09x faster at 256 px: CPUs train at the small
    # sizes (imginav_core.bench --variant training.channels_last=on, 2-core EPYC).
    # torch.compile on CUDA only: on the CPU its gain was within noise and its warm-up costs tens
    # of seconds per run.
    channels_last = {"on": True, "off": False, "auto": cuda or amp_dtype is None}[cfg.training.channels_last]
    compiled = {"on": True, "off": False, "auto": cuda}[cfg.training.compile]
    return Runtime(device, rank, world, amp_dtype, channels_last, compiled)


# ---- one optimisation step ---------------------------------------------------------------

def build_training(cfg: Config, rt: Runtime) -> tuple[torch.nn.Module, torch.optim.Optimizer,
                                                      torch.amp.GradScaler | None]:
    """The freshly seeded model in the runtime's device and memory format, its AdamW, and the
    loss scaler fp16 needs (``None`` otherwise)."""
    torch.manual_seed(cfg.training.seed)
    model = build_model(cfg).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # fused: one kernel for the whole update on CUDA instead of several per parameter group
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay,
                                  fused=rt.device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda") if rt.amp_dtype == torch.float16 else None
    return model, optimizer, scaler


def make_train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: Config, rt: Runtime,
                    scaler: torch.amp.GradScaler | None) -> Callable[..., dict[str, torch.Tensor]]:
    """forward -> losses -> backward -> AdamW step; returns the loss terms, still on the device."""

    def step(rgb: torch.Tensor, class_map: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        with rt.autocast():
            outputs = model(rgb)
        losses = compute_losses(outputs, rgb, class_map, label, cfg.loss)
        if scaler is not None:  # fp16 only (GPUs without bf16, e.g. V100)
            scaler.scale(losses["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            losses["total"].backward()
            optimizer.step()
        return losses

    return step


def maybe_compile(model: torch.nn.Module, rt: Runtime, log: Callable[[str], None]) -> torch.nn.Module:
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


# ---- the run's state -------------------------------------------------------------------------

@dataclass
class RunState:
    epoch: int = 0  # last completed epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    status: str = "running"  # running | completed | early_stopped | stopped_non_finite

    @property
    def finished(self) -> bool:
        return self.status != "running"


def _check_resumable(saved: dict[str, Any], cfg: Config, path: Path) -> None:
    old, new = flatten(saved), flatten(cfg.to_dict())
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES]
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ResumeError(
            f"{path} holds a run of '{cfg.name}' with a different configuration ({details}); "
            "use another experiment name or output_root, or remove that run folder to start over"
        )


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    # Per rank: with one seed, every rank's share of a batch would get the same VAE noise.
    torch.manual_seed((seed * 100_003 + epoch) * 1_009 + rank)  # any fixed mixing of (seed, epoch, rank) works


# ---- outputs -------------------------------------------------------------------------------

def metrics_csv_path(cfg: Config) -> Path:
    return cfg.run_dir / f"{cfg.name}_metrics.csv"


def phase_metrics_csv_path(cfg: Config) -> Path:
    """The copy of the metrics CSV beside the other experiments' in the phase folder."""
    return cfg.phase_dir / f"{cfg.name}_metrics.csv"


def sample_path(cfg: Config, epoch: int) -> Path:
    return cfg.phase_dir / "samples" / f"{cfg.name}_epoch_{epoch:03d}_comparison.png"


def run_lock_path(cfg: Config) -> Path:
    return cfg.run_dir.parent / f".{cfg.name}.lock"


def _remove_leftovers(cfg: Config) -> int:
    """Temporaries of this run's outputs left by a kill mid-write (safe under the run lock: no
    other process writes these names; V2's files beside V1's in the phase folder are not touched)."""
    name = re.escape(cfg.name)
    return (
        remove_leftovers(cfg.run_dir)
        + remove_leftovers(cfg.phase_dir, rf"{name}_metrics\.csv")
        + remove_leftovers(cfg.phase_dir / "samples", rf"{name}_epoch_\d+_comparison\.png")
    )


def write_metrics(cfg: Config, history: list[dict[str, Any]]) -> None:
    lines = [",".join(COLUMNS)]
    for row in history:
        lines.append(",".join(_cell(row.get(c, "")) for c in COLUMNS))
    text = "\n".join(lines) + "\n"
    write_text_atomic(metrics_csv_path(cfg), text)
    write_text_atomic(phase_metrics_csv_path(cfg), text)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---- one pass over the data ----------------------------------------------------------------

def train_one_epoch(step, loader, epoch: int, cfg: Config, rt: Runtime) -> tuple[dict[str, float], int, float]:
    """Returns (mean loss terms, images seen by all processes, seconds)."""
    sums = MetricSums(rt.device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=rt.device)
    bad_terms = None
    check_every = max(1, len(loader) // 10)
    start = time.perf_counter()
    bar = progress(loader, total=len(loader), desc=f"epoch {epoch}/{cfg.training.epochs} train", enabled=rt.main)
    for i, batch in enumerate(bar):
        rgb, class_map, label = to_model_inputs(batch, rt.device, rt.channels_last)
        losses = step(rgb, class_map, label)
        kill_point("train_step")
        sums.add_losses(losses, rgb.shape[0])
        # Record the first non-finite step on the device; look at it only every ~10% of the epoch,
        # so the GPU never waits for the host inside the loop.
        is_bad = ~torch.isfinite(losses["total"]) & (first_bad < 0)
        first_bad = torch.where(is_bad, torch.full_like(first_bad, i + 1), first_bad)
        stacked = torch.stack([losses[t].detach().float() for t in ("total", *TERMS)])
        bad_terms = stacked if bad_terms is None else torch.where(is_bad, stacked, bad_terms)
        if (i + 1) % check_every == 0 or i + 1 == len(loader):
            if int(first_bad) >= 0:
                terms = _terms(dict(zip(("total", *TERMS), bad_terms.tolist())))
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {int(first_bad)}: {terms}")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(losses['total'].detach()):.4f}", refresh=False)
    synchronize(rt.device)
    seconds = time.perf_counter() - start
    sums.all_reduce()
    return sums.losses(), int(sums.images), seconds


def _terms(losses: dict[str, float]) -> str:
    return ", ".join(f"{name}={losses[name]:.4g}" for name in ("total", *TERMS))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, cfg: Config, rt: Runtime) -> dict[str, float]:
    """Validation losses and reconstruction metrics (the VAE decodes its posterior mean)."""
    model.eval()
    sums = MetricSums(rt.device)
    for batch in loader:
        rgb, class_map, label = to_model_inputs(batch, rt.device, rt.channels_last)
        with rt.autocast():
            outputs = model(rgb)
        sums.add_losses(compute_losses(outputs, rgb, class_map, label, cfg.loss), rgb.shape[0])
        sums.add_outputs(outputs, rgb, class_map, label)
        kill_point("evaluate")
    model.train()
    sums.all_reduce()
    return {**sums.losses(), **sums.reconstruction()}


# ---- the run ---------------------------------------------------------------------------------

def train(cfg: Config, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) experiment ``cfg.name``; returns ``OUTPUT_ROOT/experiments/NAME``."""
    rt = setup_runtime(cfg)
    say = log if rt.main else (lambda _msg: None)
    with contextlib.ExitStack() as held:
        if rt.main:  # the main rank writes every file of a distributed run
            lock = run_lock_path(cfg)
            try:
                held.enter_context(exclusive_lock(lock))
            except LockHeldError:
                raise RunInProgressError(
                    f"another process is already training '{cfg.name}' into {cfg.run_dir} (it holds "
                    f"{lock}); wait for it to end or stop it, then run again"
                ) from None
        return _train(cfg, rt, say)


def _train(cfg: Config, rt: Runtime, say: Callable[[str], None]) -> Path:
    run_dir, last_path, best_path = cfg.run_dir, cfg.run_dir / "last.pt", cfg.run_dir / "best.pt"

    # Data: the main process generates and decodes; the others then open the same cache.
    if rt.main:
        data = load_data(cfg, say)
    if rt.world > 1:
        dist.barrier()
    if not rt.main:
        data = load_data(cfg, say)
    say(data.summary())

    model, optimizer, scaler = build_training(cfg, rt)

    state = RunState()
    if last_path.is_file():
        saved = load_checkpoint(last_path, rt.device)
        _check_resumable(saved["config"], cfg, last_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"]["torch"].cpu())
        state = RunState(**saved["state"])
        if state.status == "completed" and state.epoch < cfg.training.epochs:  # asked for more epochs
            state.status = state.history[-1]["status"] = "running"
        say(f"resuming {cfg.name} after epoch {state.epoch} from {last_path}")
    if rt.main:
        removed = _remove_leftovers(cfg)
        if removed:
            say(f"removed {removed} temporary file(s) left by an interrupted run")
        if state.history:  # a kill between last.pt and the CSV leaves the CSV an epoch behind
            write_metrics(cfg, state.history)
    if state.finished or state.epoch >= cfg.training.epochs:
        say(f"{cfg.name}: nothing to do ({state.status}, {state.epoch} epochs done)")
        return run_dir

    if rt.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
    runner = maybe_compile(model, rt, say)
    trained = torch.nn.parallel.DistributedDataParallel(runner) if rt.world > 1 else runner
    step = make_train_step(trained, optimizer, cfg, rt, scaler)
    pin = rt.device.type == "cuda"
    global_batch = cfg.training.batch_size  # split over the ranks: the optimisation is that of one process
    train_loader = batch_loader(data.train, global_batch, shuffle=True, seed=cfg.training.seed,
                                num_workers=cfg.data.num_workers, pin_memory=pin, rank=rt.rank, world=rt.world)
    val_loader = batch_loader(data.val, global_batch, shuffle=False, seed=cfg.training.seed,
                              num_workers=cfg.data.num_workers, pin_memory=pin, rank=rt.rank, world=rt.world,
                              lockstep=False)
    sample_positions = pick_samples(data.val)
    stopping = cfg.training.early_stopping

    for epoch in range(state.epoch + 1, cfg.training.epochs + 1):
        _seed_epoch(cfg.training.seed, epoch, rt.rank)
        train_loader.sampler.set_epoch(epoch)
        try:
            train_losses, images, seconds = train_one_epoch(step, train_loader, epoch, cfg, rt)
            val_start = time.perf_counter()
            val = evaluate(runner, val_loader, cfg, rt)  # its figures are floats: the device is done
            val_seconds = time.perf_counter() - val_start
            if not math.isfinite(val["total"]):
                raise NonFiniteLossError(f"non-finite validation loss after epoch {epoch}: {_terms(val)}")
        except NonFiniteLossError as err:
            state.status = "stopped_non_finite"
            if rt.main:
                write_metrics(cfg, state.history + [{"epoch": epoch, "status": state.status}])
            kept = (f"the last good checkpoint is {last_path} (epoch {state.epoch})" if state.epoch
                    else "no epoch completed, so there is no checkpoint")
            raise NonFiniteLossError(f"{cfg.name}: {err}. Training stopped; {kept}") from None

        improved = val["total"] < state.best_val - stopping.min_delta
        if improved:
            state.best_val, state.best_epoch, state.bad_epochs = val["total"], epoch, 0
        else:
            state.bad_epochs += 1
        row = {
            "epoch": epoch,
            **{f"train_{k}": train_losses[k] for k in LOSS_COLUMNS},
            **{f"val_{k}": v for k, v in val.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": seconds,
            "train_images_per_s": images / seconds,
            "val_seconds": val_seconds,
            "is_best": improved,
            "status": "running",
        }
        state.history.append(row)
        state.epoch = epoch
        if epoch == cfg.training.epochs:
            state.status = "completed"
        elif stopping.patience and state.bad_epochs >= stopping.patience:
            state.status = "early_stopped"
        row["status"] = state.status

        if rt.main:
            payload = {
                "config": cfg.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "epoch": epoch,
                "state": state.__dict__,
                "rng": _rng_state(),
            }
            # last.pt commits the epoch. A kill before it: the restarted run redoes the epoch and
            # rewrites best.pt and the sample identically. A kill after it: the restarted run
            # brings the CSV level with last.pt, so the CSV never shows an uncommitted epoch.
            if improved:
                save_checkpoint(best_path, payload)
            if epoch % cfg.training.sample_interval == 0 or state.finished:
                save_png(sample_path(cfg, epoch), comparison_grid(model, data.val, sample_positions, rt.device))
            save_checkpoint(last_path, payload)
            write_metrics(cfg, state.history)
            say(
                f"epoch {epoch}/{cfg.training.epochs}  train {train_losses['total']:.5f}  "
                f"val {val['total']:.5f}  val_mse {val['mse']:.6f}  psnr {val['psnr']:.2f}  "
                f"miou {val['miou']:.3f}  acc {val['classification_accuracy']:.3f}  "
                f"{row['train_images_per_s']:.1f} img/s  {seconds:.1f}s" + ("  *best" if improved else "")
            )
        if state.finished:
            break

    if state.status == "early_stopped":
        say(f"{cfg.name}: early stop after epoch {state.epoch}; the best weights (epoch {state.best_epoch}, "
            f"val total {state.best_val:.5f}) are in {best_path}")
    if rt.world > 1:
        dist.barrier()
    say(f"{cfg.name}: metrics in {metrics_csv_path(cfg)} and {phase_metrics_csv_path(cfg)}")
    return run_dir
