"""The training loop, top to bottom: data, model, resume, then per epoch train -> evaluate ->
best.pt -> samples -> last.pt -> metrics CSV -> early stopping. (Where each file goes:
``outputs.Outputs``.)

Running the same experiment again resumes from ``last.pt``. Each epoch's shuffle and VAE noise
are drawn from ``(seed, epoch)`` alone, so a resumed run ends exactly where an uninterrupted
one does: bit for bit on the CPU with the same number of threads (the order of floating-point
sums follows it); on a GPU close but not bit for bit, its kernels may sum in any order. Under
``torchrun`` the same code trains data-parallel (one process per GPU).

A run killed at any moment (``kill -9``: wall time, pre-emption) loses at most the epoch in
progress: every file is written whole or not at all, ``last.pt`` is written after everything
else an epoch produces except the metrics CSV, and a restarted run rewrites the CSV from
``last.pt``. One process at a time trains an experiment (a lock beside its run folder).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .. import losses as loss_terms
from ..config import Config, write_config
from ..data.batches import LayoutData, batch_loader, load_data, to_model_inputs
from ..errors import NonFiniteLossError, RunInProgressError
from ..files import LockHeldError, atomic_path, exclusive_lock, kill_point, remove_leftovers, write_text_atomic
from ..images import save_png
from ..losses import compute_losses
from ..metrics import MetricSums
from ..model import build_model
from ..runtime import Runtime, StageMeter, maybe_compile, provenance, setup_runtime, synchronize
from .checkpoints import (
    RunState,
    check_resumable,
    check_split,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_epoch,
)
from .metrics_csv import loss_columns, write_metrics
from .progress import progress
from .samples import comparison_grid, pick_samples

Log = Callable[[str], None]
TrainStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def train(cfg: Config, log: Log = print) -> Path:
    """Train (or resume) experiment ``cfg.name``; returns its run folder."""
    rt = setup_runtime(cfg)
    say = log if rt.main else (lambda _msg: None)  # the main rank speaks and writes every file
    with _run_lock(cfg, rt):
        return _train(cfg, rt, say)


def _train(cfg: Config, rt: Runtime, say: Log) -> Path:
    out, epochs = cfg.outputs, cfg.training.epochs
    meter = StageMeter(rt.device)  # this session's seconds and peak memory, kept in provenance.json
    with meter("data"):
        data = _load_data(cfg, rt, say)
    say(data.summary(root=cfg.output_root))
    model, optimizer, scaler = build_training(cfg, rt)
    state = _resume(cfg, rt, model, optimizer, scaler, data, say)
    if rt.main:
        _tidy(cfg, state, say)
    if state.finished or state.epoch >= epochs:
        say(f"{cfg.name}: nothing to do ({state.status}, {state.epoch} epochs done)")
        return out.run_dir(cfg.name)
    if rt.main:
        write_config(cfg, out.run_config(cfg.name))
        write_text_atomic(out.split_csv(cfg.name), data.split_csv())
        write_text_atomic(out.split_summary(cfg.name), json.dumps(data.split_summary(), indent=1) + "\n")
        _record_provenance(out.provenance(cfg.name), rt)

    runner = maybe_compile(model, rt, say)
    trained = torch.nn.parallel.DistributedDataParallel(runner) if rt.world > 1 else runner
    step = make_train_step(trained, optimizer, cfg, rt, scaler)
    train_loader, val_loader = _loaders(cfg, data, rt)
    sample_positions = pick_samples(data.val)

    for epoch in range(state.epoch + 1, epochs + 1):
        seed_epoch(cfg.training.seed, epoch, rt.rank)
        train_loader.sampler.set_epoch(epoch)
        with _stop_on_non_finite(cfg, state, epoch, rt):
            train_losses, images, seconds = train_one_epoch(step, train_loader, epoch, cfg, rt)
            meter.add("training", seconds)
            val_start = time.perf_counter()
            val = evaluate(runner, val_loader, cfg, rt)  # its figures are floats: the device is done
            val_seconds = time.perf_counter() - val_start
            meter.add("validation", val_seconds)
            if not math.isfinite(val["total"]):
                raise NonFiniteLossError(f"non-finite validation loss after epoch {epoch}: {_terms(val)}")

        improved = _record_epoch(
            state,
            cfg,
            epoch,
            {
                **{f"train_{k}": train_losses[k] for k in loss_columns()},
                **{f"val_{k}": v for k, v in val.items()},
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_seconds": seconds,
                "train_images_per_s": images / seconds,
                "val_seconds": val_seconds,
            },
        )
        if rt.main:
            # last.pt commits the epoch. A kill before it: the restarted run redoes the epoch and
            # rewrites best.pt and the sample identically. A kill after it: the restarted run
            # brings the CSV level with last.pt, so the CSV never shows an uncommitted epoch.
            payload = _checkpoint(cfg, state, model, optimizer, scaler, data)
            if improved:
                save_checkpoint(out.best_checkpoint(cfg.name), payload)
            if epoch % cfg.training.sample_interval == 0 or state.finished:
                save_png(
                    out.sample_grid(cfg.name, epoch), comparison_grid(model, data.val, sample_positions, rt.device)
                )
            _commit_epoch(cfg, payload, same_as_best=improved)
            write_metrics(cfg, state.history)
            _record_resources(out.provenance(cfg.name), meter)
            say(_epoch_line(cfg, state.history[-1], improved))
        if state.finished:
            break

    if state.status == "early_stopped":
        say(
            f"{cfg.name}: early stop after epoch {state.epoch}; the best weights (epoch {state.best_epoch}, "
            f"{_monitored(cfg)} {state.best_val:.5f}) are in {out.shown(out.best_checkpoint(cfg.name))}"
        )
    if rt.world > 1:
        dist.barrier()
    say(
        f"{cfg.name}: metrics in {out.shown(out.metrics_csv(cfg.name))} and "
        f"{out.shown(out.phase_metrics_csv(cfg.name))}"
    )
    return out.run_dir(cfg.name)


# ---- before the first epoch -------------------------------------------------------------------


@contextlib.contextmanager
def _run_lock(cfg: Config, rt: Runtime) -> Iterator[None]:
    """One process at a time trains an experiment into its run folder (the main rank holds it)."""
    with contextlib.ExitStack() as held:
        if rt.main:
            lock = cfg.outputs.run_lock(cfg.name)
            try:
                held.enter_context(exclusive_lock(lock))
            except LockHeldError:
                raise RunInProgressError(
                    f"another process is already training '{cfg.name}' into {cfg.outputs.run_dir(cfg.name)} "
                    f"(it holds {lock}); wait for it to end or stop it, then run again"
                ) from None
        yield


def _record_provenance(path: Path, rt: Runtime) -> None:
    """Append this start to the run's provenance.json: a resumed run may continue on another
    machine, and each part of it is recorded."""
    sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
    write_text_atomic(path, json.dumps({"sessions": sessions + [provenance(rt)]}, indent=1) + "\n")


def _record_resources(path: Path, meter: StageMeter) -> None:
    """This session's seconds (data, training, validation) and peak memory so far, into its entry
    of provenance.json (after each epoch: a killed run keeps them)."""
    sessions = json.loads(path.read_text())["sessions"]
    sessions[-1]["resources"] = meter.resources()
    write_text_atomic(path, json.dumps({"sessions": sessions}, indent=1) + "\n")


def _load_data(cfg: Config, rt: Runtime, say: Log) -> LayoutData:
    """The main process generates and decodes; the others then open the same cache."""
    if rt.main:
        data = load_data(cfg, say)
    if rt.world > 1:
        dist.barrier()
    if not rt.main:
        data = load_data(cfg, say)
    return data


def build_training(
    cfg: Config, rt: Runtime
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler | None]:
    """The freshly seeded model in the runtime's device and memory format, its AdamW, and the
    loss scaler fp16 needs (``None`` otherwise)."""
    torch.manual_seed(cfg.training.seed)
    model = build_model(cfg).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # fused: one kernel for the whole update on CUDA instead of several per parameter group
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay, fused=rt.device.type == "cuda"
    )
    scaler = torch.amp.GradScaler("cuda") if rt.amp_dtype == torch.float16 else None
    return model, optimizer, scaler


def _resume(
    cfg: Config,
    rt: Runtime,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    data: LayoutData,
    say: Log,
) -> RunState:
    """The state of the run in ``last.pt`` (weights, optimizer and RNG restored), or a fresh one.
    A checkpoint of another split of the data, or another configuration, is refused."""
    last = cfg.outputs.last_checkpoint(cfg.name)
    if not last.is_file():
        return RunState()
    saved = load_checkpoint(last, rt.device)
    check_split(saved, data.split_state(), last, cfg.outputs.run_dir(cfg.name))
    check_resumable(saved["config"], cfg, last)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng"]["torch"].cpu())
    state = RunState(**saved["state"])
    if state.status == "completed" and state.epoch < cfg.training.epochs:  # asked for more epochs
        state.status = state.history[-1]["status"] = "running"
    say(f"resuming {cfg.name} after epoch {state.epoch} from {cfg.outputs.shown(last)}")
    return state


def _tidy(cfg: Config, state: RunState, say: Log) -> None:
    """Remove the temporaries a kill mid-write left of this run's own files (safe under the run
    lock: no other process writes them), and bring the metrics CSV level with ``last.pt``."""
    removed = sum(remove_leftovers(folder, names) for folder, names in cfg.outputs.own_files(cfg.name))
    if removed:
        say(f"removed {removed} temporary file(s) left by an interrupted run")
    if state.history:  # a kill between last.pt and the CSV leaves the CSV an epoch behind
        write_metrics(cfg, state.history)


def _loaders(cfg: Config, data: LayoutData, rt: Runtime):
    pin = rt.device.type == "cuda"
    global_batch = cfg.training.batch_size  # split over the ranks: the optimisation is that of one process
    train_loader = batch_loader(
        data.train,
        global_batch,
        shuffle=True,
        seed=cfg.training.seed,
        num_workers=cfg.data.num_workers,
        pin_memory=pin,
        rank=rt.rank,
        world=rt.world,
    )
    val_loader = batch_loader(
        data.val,
        global_batch,
        shuffle=False,
        seed=cfg.training.seed,
        num_workers=cfg.data.num_workers,
        pin_memory=pin,
        rank=rt.rank,
        world=rt.world,
        lockstep=False,
    )
    return train_loader, val_loader


# ---- one optimisation step and one pass over the data -------------------------------------------


def make_train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: Config,
    rt: Runtime,
    scaler: torch.amp.GradScaler | None,
) -> TrainStep:
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


def train_one_epoch(
    step: TrainStep, loader, epoch: int, cfg: Config, rt: Runtime
) -> tuple[dict[str, float], int, float]:
    """Returns (mean loss terms, images seen by all processes, seconds)."""
    sums = MetricSums(rt.device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=rt.device)
    bad_terms = None
    names = _loss_names()
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
        stacked = torch.stack([losses[t].detach().float() for t in names])
        bad_terms = stacked if bad_terms is None else torch.where(is_bad, stacked, bad_terms)
        if (i + 1) % check_every == 0 or i + 1 == len(loader):
            if int(first_bad) >= 0:
                terms = _terms(dict(zip(names, bad_terms.tolist())))
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {int(first_bad)}: {terms}")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(losses['total'].detach()):.4f}", refresh=False)
    synchronize(rt.device)
    seconds = time.perf_counter() - start
    sums.all_reduce()
    return sums.losses(), int(sums.images), seconds


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


# ---- after each epoch ------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_non_finite(cfg: Config, state: RunState, epoch: int, rt: Runtime) -> Iterator[None]:
    """A NaN or inf ends the run: a metrics row saying so, the last good checkpoint kept."""
    try:
        yield
    except NonFiniteLossError as err:
        state.status = "stopped_non_finite"
        if rt.main:
            write_metrics(cfg, state.history + [{"epoch": epoch, "status": state.status}])
        last = cfg.outputs.last_checkpoint(cfg.name)
        kept = (
            f"the last good checkpoint is {cfg.outputs.shown(last)} (epoch {state.epoch})"
            if state.epoch
            else "no epoch completed, so there is no checkpoint"
        )
        raise NonFiniteLossError(f"{cfg.name}: {err}. Training stopped; {kept}") from None


def _monitored(cfg: Config) -> str:
    """The metrics column that picks best.pt and stops early: ``val_reconstruction`` (the weighted
    terms that count as reconstruction, the KL left out, so that V1 and V2 are picked on the same
    quantity) or, for a run of older code (its config's documented default), ``val_total``."""
    return f"val_{cfg.training.early_stopping.monitor}"


def _record_epoch(state: RunState, cfg: Config, epoch: int, figures: dict[str, Any]) -> bool:
    """Add the epoch's row to the history, move early stopping on; True if the monitored
    validation loss (``_monitored``) improved by more than ``min_delta``."""
    stopping = cfg.training.early_stopping
    value = figures[_monitored(cfg)]
    improved = value < state.best_val - stopping.min_delta
    if improved:
        state.best_val, state.best_epoch, state.bad_epochs = value, epoch, 0
    else:
        state.bad_epochs += 1
    row = {"epoch": epoch, **figures, "is_best": improved, "status": "running"}
    state.history.append(row)
    state.epoch = epoch
    if epoch == cfg.training.epochs:
        state.status = "completed"
    elif stopping.patience and state.bad_epochs >= stopping.patience:
        state.status = "early_stopped"
    row["status"] = state.status
    return improved


def _checkpoint(
    cfg: Config,
    state: RunState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    data: LayoutData,
) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "split": data.split_state(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": state.epoch,
        "state": state.__dict__,
        "rng": rng_state(),
    }


def _commit_epoch(cfg: Config, payload: dict[str, Any], same_as_best: bool) -> None:
    """Write last.pt, which commits the epoch. When best.pt was just written with this payload,
    last.pt becomes a second name of that file (a hard link, made whole-or-nothing like any other
    write): one checkpoint written per epoch instead of two, and the next write of either name
    replaces only that name. Where the file system has no hard links, the payload is written again."""
    last = cfg.outputs.last_checkpoint(cfg.name)
    if same_as_best:
        try:
            with atomic_path(last) as tmp:
                tmp.unlink()
                os.link(cfg.outputs.best_checkpoint(cfg.name), tmp)
            return
        except OSError:  # no hard links here (some network and FUSE file systems)
            pass
    save_checkpoint(last, payload)


def _epoch_line(cfg: Config, row: dict[str, Any], improved: bool) -> str:
    monitored = _monitored(cfg)
    return (
        f"epoch {row['epoch']}/{cfg.training.epochs}  train {row['train_total']:.5f}  "
        f"val {row['val_total']:.5f}  {monitored} {row[monitored]:.5f}  "
        f"val_mse {row['val_mse']:.6f}  psnr {row['val_psnr']:.2f}  "
        f"miou {row['val_miou']:.3f}  acc {row['val_classification_accuracy']:.3f}  "
        f"{row['train_images_per_s']:.1f} img/s  {row['epoch_seconds']:.1f}s" + ("  *best" if improved else "")
    )


def _loss_names() -> list[str]:
    """What a message about a non-finite loss names: the total, then each registered term (raw)."""
    return ["total", *(term.name for term in loss_terms.TERMS)]


def _terms(losses: dict[str, float]) -> str:
    return ", ".join(f"{name}={losses[name]:.4g}" for name in _loss_names())
