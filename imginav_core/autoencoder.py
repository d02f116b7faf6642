"""A trained run's autoencoder, ready to encode and decode: what Phase 1.3's code loads.

    from imginav_core import load_autoencoder
    ae = load_autoencoder("outputs/experiments/phase1_2_AE_V1_deterministic", device="cuda")
    posterior = ae.encode_png("data/images/000000_scene.png")  # model.DiagonalGaussian, 1 x C x h x w
    layout = ae.decode(posterior.mean)                          # rgb, segmentation, classification
    rgb = to_uint8(layout["rgb"])                               # imginav_core.images: 1 x R x R x 3 uint8

The weights are the run's ``best.pt`` (the early-stopping best, which the analysis measured), the
configuration the one that checkpoint records; eval mode, no autograd. Images go in and come out
in [-1, 1] as training used them (``images_to_input``); book/using/phase1_3.md gives every shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ENUMS, Config
from .data.cache import load_layout
from .errors import CheckpointError, ConfigError
from .images import from_uint8
from .model import DiagonalGaussian, LayoutAutoencoder
from .outputs import run_best_checkpoint
from .runtime import resolve_device
from .training.checkpoints import load_model


def images_to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB images, (H, W, 3) or (B, H, W, 3), as the model takes them: (B, 3, H, W) float32
    in [-1, 1], as training takes them (``images.from_uint8``)."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:  # as PIL gives them: torch wants to own them
        images = images.copy()
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 RGB images (H, W, 3) or (B, H, W, 3); got {images.dtype} of shape {tuple(images.shape)}"
        )
    return from_uint8(images[None] if images.ndim == 3 else images).contiguous()


def posterior_std(posterior: DiagonalGaussian) -> torch.Tensor | None:
    """The posterior's standard deviation, ``exp(logvar / 2)`` of its clamped log-variance; None for
    the deterministic encoder's point mass."""
    return None if posterior.logvar is None else torch.exp(0.5 * posterior.logvar)


@dataclass
class TrainedAutoencoder:
    """A run's model at its best checkpoint, and the configuration it trained with."""

    run_dir: Path
    checkpoint: Path  # the run's best.pt
    config: Config
    model: LayoutAutoencoder  # eval mode, on ``device``, parameters frozen
    device: torch.device
    epoch: int  # the epoch the checkpoint was written after

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def variational(self) -> bool:
        return self.model.variational

    @property
    def resolution(self) -> int:
        """The side, in pixels, of the layouts the run trained on."""
        return self.config.data.resolution

    @property
    def downsampling_factor(self) -> int:
        return self.model.downsampling_factor

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one layout's latent at the run's resolution."""
        side = self.resolution // self.downsampling_factor
        return (self.model.latent_channels, side, side)

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor) -> DiagonalGaussian:
        """The posterior q(z | x) of images ``rgb`` (B x 3 x H x W, float in [-1, 1]), on the device:
        ``.mean`` (the latent the export writes), ``.sample()``, ``.mode()``; ``posterior_std``."""
        return self.model.posterior(self._checked_images(rgb))

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three heads on latents ``latent`` (B x C x h x w): ``rgb`` in [-1, 1], ``segmentation``
        and ``classification`` logits (the module's docstring gives the shapes)."""
        if not isinstance(latent, torch.Tensor) or latent.ndim != 4 or latent.shape[1] != self.model.latent_channels:
            shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise ValueError(f"{self.name}: expected latents B x {self.model.latent_channels} x h x w; got {shape}")
        return self.model.decode(latent.to(self.device, torch.float32))

    def reconstruct(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """``decode(encode(rgb).mode())``: what the model's forward pass gives in eval mode."""
        return self.decode(self.encode(rgb).mode())

    def load_png(self, path: str | Path) -> torch.Tensor:
        """A layout PNG as the model takes it (1 x 3 x R x R in [-1, 1], on the device), decoded as
        training decodes it (``data.cache.load_layout``: resized nearest-neighbour to the run's
        resolution R; a broken file is a LayoutReadError naming it)."""
        rgb, _, _ = load_layout(path, self.resolution)
        return images_to_input(rgb).to(self.device)

    def encode_png(self, path: str | Path) -> DiagonalGaussian:
        """The posterior of one layout PNG (batch of 1)."""
        return self.encode(self.load_png(path))

    def _checked_images(self, rgb: torch.Tensor) -> torch.Tensor:
        if not isinstance(rgb, torch.Tensor) or rgb.ndim != 4 or rgb.shape[1] != 3:
            shape = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
            raise ValueError(f"{self.name}: expected RGB images B x 3 x H x W; got {shape}")
        if not rgb.is_floating_point():
            raise ValueError(
                f"{self.name}: expected float images in [-1, 1], got {rgb.dtype} (images_to_input converts uint8)"
            )
        factor = self.downsampling_factor
        if rgb.shape[2] % factor or rgb.shape[3] % factor:
            raise ValueError(
                f"{self.name}: images of {rgb.shape[2]} x {rgb.shape[3]} pixels; the sides must be multiples of "
                f"{factor} (the run trained at {self.resolution} x {self.resolution})"
            )
        low, high = float(rgb.min()), float(rgb.max())
        if low < -1.001 or high > 1.001:
            raise ValueError(
                f"{self.name}: image values in [{low:.3g}, {high:.3g}]; expected [-1, 1] "
                "(uint8 / 127.5 - 1: images_to_input)"
            )
        return rgb.to(self.device, torch.float32)


def load_autoencoder(run_dir: str | Path, device: str | torch.device = "cpu") -> TrainedAutoencoder:
    """The autoencoder of the run folder ``run_dir`` (``OUTPUT_ROOT/experiments/NAME``, wherever it
    was copied) at its ``best.pt``, on ``device`` (``auto``: a GPU when one is visible). A
    CheckpointError names the folder and what is wrong: no such folder, no best.pt (not a finished
    run), a file that is not an imginav_core checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(
            f"{run_dir}: no such run folder (a run folder is OUTPUT_ROOT/experiments/NAME, holding best.pt)"
        )
    best = run_best_checkpoint(run_dir)
    if not best.is_file():
        raise CheckpointError(
            f"{run_dir}: not a finished run: it has no {best.name} (the early-stopping best, written after the first "
            "validated epoch); wait for its training job, or resubmit it (it resumes from last.pt)"
        )
    if isinstance(device, str):
        if not ENUMS["training.device"].match(device):
            raise ConfigError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")
        device = resolve_device(device, "device")
    try:
        cfg, model, payload = load_model(best, map_location=device)
    except (KeyError, RuntimeError) as err:  # a checkpoint of the format without a model, or of another model
        raise CheckpointError(
            f"{best}: not the checkpoint of a layout autoencoder ({type(err).__name__}: {err})"
        ) from None
    model.requires_grad_(False)
    return TrainedAutoencoder(run_dir, best, cfg, model, device, int(payload.get("epoch", 0)))
