"""Checkpoints: written whole or not at all, read back without running any code.

A checkpoint holds only tensors and plain data (config as a dict, metrics history as lists of
numbers), so ``torch.load(..., weights_only=True)`` reads it: a file from a shared folder
cannot execute anything when it is loaded.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .config import Config, config_from_dict
from .model import LayoutAutoencoder, build_model

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


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
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch file of tensors and plain data: "
                              f"{first_line})") from None
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
