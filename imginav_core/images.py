"""The model's images and pictures: uint8 RGB to the model's [-1, 1] floats and back, uint8 arrays
to PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import write_bytes_atomic


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """NHWC uint8 -> [-1, 1] NCHW float32, the model's input (``to_uint8`` inverts it)."""
    return images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> NHWC uint8."""
    return ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def png_bytes(image: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Written whole or not at all."""
    write_bytes_atomic(path, png_bytes(image))
