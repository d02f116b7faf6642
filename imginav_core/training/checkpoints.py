"""What a run keeps between epochs: its state, the checkpoint files, and whether a checkpoint
may resume the configured run.

A checkpoint holds only tensors and plain data (config as a dict, metrics history as lists of
numbers), so ``torch.load(..., weights_only=True)`` reads it: a file from a shared folder cannot
execute anything when it is loaded. It is written whole or not at all.
"""

from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config, config_from_dict, flatten
from ..errors import CheckpointError, ConfigError, ResumeError
from ..files import atomic_path
from ..model import LayoutAutoencoder, build_model

FORMAT = 1
# Keys that may change between the interrupted run and its resumption: where and how fast it
# runs, not what it computes.
RESUMABLE_CHANGES = {
    "output_root",
    "training.epochs",
    "training.device",
    "training.compile",
    "training.channels_last",
    "training.sample_interval",
    "data.num_workers",
    "data.cache_dir",
    "data.manifest",
}


@dataclass
class RunState:
    epoch: int = 0  # last completed epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics CSV's rows
    best_val: float = math.inf  # the best val_<training.early_stopping.monitor> so far
    best_epoch: int = 0
    bad_epochs: int = 0
    status: str = "running"  # running | completed | early_stopped | stopped_non_finite

    @property
    def finished(self) -> bool:
        return self.status != "running"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refuses to build any other Python object
        named = re.search(r"GLOBAL ([\w.]+)", str(err))
        if named:
            raise CheckpointError(
                f"{path}: refused: it asks to build the Python object {named[1]}, which could run code; "
                "imginav_core checkpoints hold only tensors and plain data, so this file was written "
                "by something else or altered"
            ) from None
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]  # torch's text runs to paragraphs
        raise CheckpointError(
            f"{path}: not a readable checkpoint (not a torch file of tensors and plain data: {first_line})"
        ) from None
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an imginav_core checkpoint (format {FORMAT} expected)")
    return payload


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Config, LayoutAutoencoder, dict]:
    """(config, model in eval mode with the checkpoint's weights, the whole checkpoint)."""
    payload = load_checkpoint(path, map_location)
    cfg = config_from_dict(payload["config"], source=str(path))
    model = build_model(cfg)
    model.load_state_dict(payload["model"])
    return cfg, model.to(map_location).eval(), payload


def check_resumable(saved: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse a checkpoint of a differently configured run, naming the keys that differ. The saved
    configuration is read as its own schema version says, so a run of older code compares with its
    documented defaults (its ``training.early_stopping.monitor`` is ``total``: resumed under another,
    its best epoch so far would have been picked on another quantity)."""
    try:
        saved = config_from_dict(saved, source=str(path)).to_dict()
    except ConfigError:  # e.g. a loss term no longer registered: compared as it was written
        pass
    old, new = flatten(saved), flatten(cfg.to_dict())
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES]
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        back = " ".join(f"--set {k}={old[k]}" for k in changed if k in old)
        raise ResumeError(
            f"{path} holds a run of '{cfg.name}' with a different configuration ({details}); "
            + (f"to continue it as it began, train with {back}; or " if back else "")
            + "use another experiment name or output_root, or remove that run folder to start over"
        )


def check_split(payload: dict[str, Any], current: dict[str, Any], path: Path, run_dir: Path) -> None:
    """Refuse a checkpoint trained under another split of the data: another scheme (the earlier
    train/validation split by scene, recorded as no ``split`` at all), other fractions or seed, or
    other layouts on the sides (the manifest changed). Resumed, such a run would validate and be
    tested on layouts it may have trained on. ``current`` is ``LayoutData.split_state()``."""
    saved = payload.get("split")
    if saved is None:
        data = payload.get("config", {}).get("data", {})
        described = (
            f"train/validation by scene, val_fraction {data.get('val_fraction')}, "
            f"split_seed {data.get('split_seed')}, no test split"
        )
    elif saved == current:
        return
    elif {k: v for k, v in saved.items() if k != "digest"} == {k: v for k, v in current.items() if k != "digest"}:
        raise ResumeError(
            f"{path} was trained on the same split scheme but other layouts on its sides: the manifest's "
            "layouts changed since (rows added or removed, an image now skipped or read). Train afresh in a "
            f"new folder (another output_root or experiment name), or delete the run folder {run_dir} to start over"
        )
    else:
        described = _split_text(saved)
    raise ResumeError(
        f"{path} was trained under another split of the data ({described}) than this run's "
        f"({_split_text(current)}); resumed, it would validate and be tested on layouts it may have trained on. "
        f"Train afresh in a new folder (another output_root or experiment name), or delete the run folder "
        f"{run_dir} to start over"
    )


def _split_text(state: dict[str, Any]) -> str:
    return (
        f"{state['scheme']}, val_fraction {state['val_fraction']}, test_fraction {state['test_fraction']}, "
        f"split_seed {state['split_seed']}"
    )


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Each epoch's VAE noise from ``(seed, epoch)`` alone, so a resumed run draws what an
    uninterrupted one would. Per rank: with one seed, every rank's share of a batch would get
    the same noise."""
    torch.manual_seed((seed * 100_003 + epoch) * 1_009 + rank)  # any fixed mixing of (seed, epoch, rank) works
