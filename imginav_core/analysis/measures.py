"""The measurements of Phase 1.2, each a small function with its formula.

Images are NCHW float tensors in the model's range [-1, 1]; latents NCHW. Every function is
deterministic given its inputs (noise comes from an explicit ``torch.Generator``).
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from ..model import DiagonalGaussian
from ..palette import PALETTE

PURITY_TOLERANCE = 24.0  # RGB distance (0-255 units) within which a pixel counts as a palette colour
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active if Cov_x(E_q[z|x]) > 0.01


# ---- reconstruction --------------------------------------------------------------------

def mse_per_image(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean((prediction - target)^2)`` over C, H, W, in the [-1, 1] range (the training loss's scale)."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(1)


def ssim_per_image(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004; torchmetrics, Gaussian window 11, sigma 1.5) of
    each image, compared in [0, 1]. 1.0 = identical."""
    # float64: in float32, E[x^2] - E[x]^2 over flat layout regions leaves errors of ~1e-3
    p = (prediction.double().clamp(-1, 1) + 1) / 2
    t = (target.double() + 1) / 2
    side = min(p.shape[-2:])
    kernel = min(11, side - (1 - side % 2))  # the window must fit in (and be odd for) small images
    return structural_similarity_index_measure(p, t, data_range=1.0, reduction="none", kernel_size=kernel).float()


def _gradient(images: torch.Tensor) -> torch.Tensor:
    """Per pixel ``|I[y, x+1] - I[y, x]| + |I[y+1, x] - I[y, x]|`` summed over channels: (N, H-1, W-1)."""
    images = images.float()
    dx = (images[..., :-1, 1:] - images[..., :-1, :-1]).abs()
    dy = (images[..., 1:, :-1] - images[..., :-1, :-1]).abs()
    return (dx + dy).sum(1)


def edge_energy(reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient energy at the input's edges, per image: ``(sum_E |grad R|, sum_E |grad I|)`` over the
    pixels E where the input changes colour (walls, furniture outlines).

    Their ratio is the *sharpness ratio*: 1.0 = edges as crisp as in the input, lower = blurred.
    Measuring only at the input's edges keeps noise in flat regions from passing for sharpness."""
    g_target = _gradient(target)
    edges = (g_target > 1e-3).float()
    return (_gradient(reconstruction) * edges).flatten(1).sum(1), (g_target * edges).flatten(1).sum(1)


def palette_purity(images: torch.Tensor, tolerance: float = PURITY_TOLERANCE) -> torch.Tensor:
    """Share of each image's pixels whose colour lies within ``tolerance`` (Euclidean, 0-255 RGB)
    of some palette colour: 1.0 = a clean layout, lower = in-between, muddy colours."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1)  # N, H, W, 3
    palette = torch.tensor(PALETTE, dtype=torch.float32, device=images.device)
    nearest = torch.cdist(pixels.reshape(len(images), -1, 3), palette.expand(len(images), -1, -1)).amin(-1)
    return (nearest <= tolerance).float().mean(1)


def segmentation_confidence(logits: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of the segmentation head's top softmax probability, per image."""
    return logits.float().softmax(1).amax(1).flatten(1).mean(1)


# ---- latent space --------------------------------------------------------------------------

def latent_statistics(latents: torch.Tensor) -> dict:
    """Per-channel mean and standard deviation over images and positions; overall std and the
    scale factor ``1 / std`` a diffusion model would multiply latents by (as in latent
    diffusion); excess kurtosis ``E[(z - m)^4] / s^4 - 3`` (0 for a Gaussian, large = heavy tails)."""
    z = latents.double()
    per_channel = z.transpose(0, 1).flatten(1)  # C, N*H*W
    flat = z.flatten()
    std = float(flat.std())
    centred = flat - flat.mean()
    kurtosis = float(centred.pow(4).mean() / centred.pow(2).mean().pow(2) - 3.0)
    ch_centred = per_channel - per_channel.mean(1, keepdim=True)
    ch_kurtosis = ch_centred.pow(4).mean(1) / ch_centred.pow(2).mean(1).pow(2) - 3.0
    return {
        "channel_mean": per_channel.mean(1).tolist(),
        "channel_std": per_channel.std(1).tolist(),
        "channel_excess_kurtosis": ch_kurtosis.tolist(),
        "mean": float(flat.mean()),
        "std": std,
        "scale_factor": 1.0 / std if std > 0 else math.inf,
        "excess_kurtosis": kurtosis,
    }


def channel_activity(means: torch.Tensor) -> torch.Tensor:
    """Per channel: the variance across images of the (posterior) mean, averaged over latent
    positions — ``mean_{h,w} Var_x(E[z_{c,h,w} | x])``."""
    return means.double().var(0).mean((1, 2))


def posterior_health(mu: torch.Tensor, logvar: torch.Tensor, kld_weight: float,
                     min_active_fraction: float) -> dict:
    """KL(q(z|x) || N(0, I)) as trained (mean over latent elements), raw and weighted; KL per
    channel; active units (channels with activity > 0.01); posterior-collapse flag (fewer than
    ``min_active_fraction`` of the channels active)."""
    kl = DiagonalGaussian(mu.double(), logvar.double()).kl_elements()
    activity = channel_activity(mu)
    active = activity > ACTIVE_UNIT_THRESHOLD
    channels = mu.shape[1]
    return {
        "kld": float(kl.mean()),
        "kld_weighted": float(kl.mean()) * kld_weight,
        "kl_per_channel": kl.mean((0, 2, 3)).tolist(),
        "active_units": int(active.sum()),
        "channels": channels,
        "collapsed": bool(active.sum() < min_active_fraction * channels),
    }


# ---- paths through the latent space -------------------------------------------------------------

def lerp(z0: torch.Tensor, z1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Straight line ``(1 - a) z0 + a z1`` for each alpha: (T, C, H, W)."""
    a = alphas.view(-1, 1, 1, 1).to(z0)
    return (1 - a) * z0 + a * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Spherical path: ``sin((1-a) t) / sin t * z0 + sin(a t) / sin t * z1`` with t the angle
    between the flattened latents (falls back to the straight line when they are parallel)."""
    a0, a1 = z0.flatten().double(), z1.flatten().double()
    cos = torch.dot(a0, a1) / (a0.norm() * a1.norm()).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(theta) < 1e-4:
        return lerp(z0, z1, alphas)
    a = alphas.double().view(-1, 1)
    path = (torch.sin((1 - a) * theta) * a0 + torch.sin(a * theta) * a1) / torch.sin(theta)
    return path.view(len(alphas), *z0.shape).to(z0)


def path_smoothness(frames: torch.Tensor) -> dict:
    """For decoded frames (T, C, H, W) along a path: with d_t = ||F_{t+1} - F_t|| (L2 over pixels),
    ``path_length_ratio = sum_t d_t / ||F_T - F_0||`` (1.0 = the frames move straight from one
    end to the other; higher = detours) and ``max_step_share = max_t d_t / sum_t d_t``
    (1 / (T-1) = perfectly even steps; near 1 = one abrupt jump)."""
    f = frames.double().flatten(1)
    steps = (f[1:] - f[:-1]).norm(dim=1)
    total = float(steps.sum())
    ends = float((f[-1] - f[0]).norm())
    return {
        "path_length_ratio": total / ends if ends > 0 else math.inf,
        "max_step_share": float(steps.max()) / total if total > 0 else 0.0,
        "steps": steps.tolist(),
    }


def add_latent_noise(z: torch.Tensor, sigma: float, latent_std: float, generator: torch.Generator) -> torch.Tensor:
    """``z + sigma * eps * std(z)``, eps ~ N(0, I): noise on the scale of the latent space itself,
    the kind of error a diffusion sampler leaves in the latents it produces."""
    eps = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z.device)
    return z + sigma * latent_std * eps
