"""The latent space a diffusion model would be trained on: encoded once, standardised per channel.

Latent diffusion pre-encodes its training set. For a VAE it keeps each image's posterior (mean
and standard deviation) and draws a fresh posterior sample every time the image is drawn into a
batch, as Stable Diffusion's training does; the deterministic encoder gives one point per image.
Each channel is then standardised with the training latents' statistics (what a model sees has
unit variance whichever autoencoder made it), and standardisation is inverted before decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...data.batches import CachedLayouts, to_model_inputs
from ...model import LayoutAutoencoder


@dataclass
class EncodedLayouts:
    mean: torch.Tensor  # (N, C, h, w) float32, on the CPU
    std: torch.Tensor | None  # the posterior's standard deviation; None for a deterministic encoder

    def __len__(self) -> int:
        return len(self.mean)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mean.shape[1:])

    def draw(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The latents of ``rows``: a fresh posterior sample per call for a VAE."""
        mean = self.mean[rows]
        if self.std is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + self.std[rows] * noise


@torch.no_grad()
def encode_layouts(
    model: LayoutAutoencoder, layouts: CachedLayouts, device: torch.device, batch_size: int = 64
) -> EncodedLayouts:
    """Every layout's posterior, in the order of ``layouts``."""
    model.eval()
    means, stds = [], []
    for start in range(0, len(layouts), batch_size):
        # Consecutive positions are already sorted, so the batch keeps the layouts' order.
        rgb, _, _ = to_model_inputs(layouts[np.arange(start, min(start + batch_size, len(layouts)))], device)
        posterior = model.posterior(rgb)
        means.append(posterior.mean.float().cpu())
        if not posterior.deterministic:
            stds.append(torch.exp(0.5 * posterior.logvar.float()).cpu())
    return EncodedLayouts(torch.cat(means), torch.cat(stds) if stds else None)


@dataclass
class Standardiser:
    """Per-channel shift and scale to zero mean, unit variance (of the latents a diffusion model
    trains on: posterior samples for a VAE, whose variance is var(mean) + E[posterior variance])."""

    shift: torch.Tensor  # (C,)
    scale: torch.Tensor  # (C,)

    @classmethod
    def fit(cls, encoded: EncodedLayouts) -> Standardiser:
        mean = encoded.mean.double()
        shift = mean.mean((0, 2, 3))
        variance = mean.var((0, 2, 3), unbiased=False)
        if encoded.std is not None:
            variance = variance + encoded.std.double().pow(2).mean((0, 2, 3))
        # A dead channel (constant) would divide by zero; leave it at unit scale.
        scale = variance.sqrt().clamp_min(1e-8)
        return cls(shift.float(), scale.float())

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self._view(self.shift, z)) / self._view(self.scale, z)

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        return z * self._view(self.scale, z) + self._view(self.shift, z)

    @staticmethod
    def _view(values: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return values.to(z.device, z.dtype).view(1, -1, 1, 1)

    def to_json(self) -> dict:
        return {"shift": self.shift.tolist(), "scale": self.scale.tolist()}
