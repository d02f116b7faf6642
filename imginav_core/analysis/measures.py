"""The measurements of Phase 1.2, each a small function with its formula.

Images are NCHW float tensors in the model's range [-1, 1]; latents NCHW. Every function is
deterministic given its inputs (noise comes from an explicit ``torch.Generator``).
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from ..model import DiagonalGaussian
from ..palette import PALETTE, PURITY_TOLERANCE

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active if Cov_x(E_q[z|x]) > 0.01
COLLAPSE_SHARE = 0.05  # fewer active units than this share: the posterior has collapsed


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
    """What a latent diffusion model trained on ``latents`` would see: per-channel mean, standard
    deviation and excess kurtosis ``E[(z - m)^4] / s^4 - 3`` (0 for a Gaussian, large = heavy
    tails), each channel on its own scale — pooled over channels of unequal scale the kurtosis
    of Gaussians is not 0 (std 0.5 and 2 pool to 2.3); and the scale factor ``1 / std`` over
    everything, the one number latent diffusion multiplies its latents by."""
    z = latents.double()
    per_channel = z.transpose(0, 1).flatten(1)  # C, N*H*W
    centred = per_channel - per_channel.mean(1, keepdim=True)
    kurtosis = centred.pow(4).mean(1) / centred.pow(2).mean(1).pow(2) - 3.0
    std = float(z.std())
    return {
        "channel_mean": per_channel.mean(1).tolist(),
        "channel_std": per_channel.std(1).tolist(),
        "channel_excess_kurtosis": kurtosis.tolist(),
        "max_channel_excess_kurtosis": float(kurtosis.max()),
        "median_channel_excess_kurtosis": float(kurtosis.median()),
        "std": std,
        "scale_factor": 1.0 / std if std > 0 else math.inf,
    }


def unit_activity(means: torch.Tensor) -> torch.Tensor:
    """``Var_x(E[z_u | x])`` of every latent unit u = (channel, row, column): (C, H, W)."""
    return means.double().var(0)


def posterior_health(mu: torch.Tensor, logvar: torch.Tensor, kld_weight: float, pixels: int, total_loss: float) -> dict:
    """The VAE's posterior as measured on images whose posterior is N(mu, exp(logvar)).

    The KL is trained as a mean over latent elements, so its size needs units: ``kl_nats_per_element``;
    ``kl_bits_per_pixel`` = the KL of a whole image (summed over its latent elements) in bits, per
    image pixel; ``kl_share_of_loss`` = the weighted KL over the validation loss it was part of.
    Active units (Burda et al. 2016): units whose posterior mean varies across images,
    ``Var_x(E[z_u|x]) > 0.01``, counted unit by unit; a VAE normally leaves some inactive, so
    only almost none active (``COLLAPSE_SHARE``) is collapse. ``noise_to_signal`` per channel:
    ``mean sigma_q / std_x(mu)``, the posterior's own noise against the spread of its means —
    near 1 or above, the decoder was trained on latents mostly noise."""
    kl = DiagonalGaussian(mu.double(), logvar.double()).kl_elements()
    nats = float(kl.mean())
    activity = unit_activity(mu)
    active = activity > ACTIVE_UNIT_THRESHOLD
    sigma = (0.5 * logvar.double()).exp()
    spread = mu.double().transpose(0, 1).flatten(1).std(1)
    noise_to_signal = sigma.mean((0, 2, 3)) / spread.clamp_min(1e-12)
    share = float(active.double().mean())
    return {
        "kl_nats_per_element": nats,
        "kl_weighted": nats * kld_weight,
        "kl_bits_per_pixel": float(kl.flatten(1).sum(1).mean()) / math.log(2) / pixels,
        "kl_share_of_loss": nats * kld_weight / total_loss if total_loss > 0 else math.nan,
        "kl_per_channel": kl.mean((0, 2, 3)).tolist(),
        "active_units": int(active.sum()),
        "units": int(active.numel()),
        "active_share": share,
        "active_share_per_channel": active.double().mean((1, 2)).tolist(),
        "noise_to_signal_per_channel": noise_to_signal.tolist(),
        "median_noise_to_signal": float(noise_to_signal.median()),
        "collapsed": share < COLLAPSE_SHARE,
    }


# ---- paths through the latent space -------------------------------------------------------------


def lerp(z0: torch.Tensor, z1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Straight line ``(1 - a) z0 + a z1`` for each alpha: (T, C, H, W)."""
    a = alphas.view(-1, 1, 1, 1).to(z0)
    return (1 - a) * z0 + a * z1


def path_validity(rgb: torch.Tensor, segmentation: torch.Tensor) -> dict:
    """Is what lies between two layouts still a layout? For the decoded frames (T, ...) of a path,
    the palette purity and segmentation confidence of the inner frames (the ends are the two
    reconstructions): their mean and the worst frame. A cross-fade of two layouts passes
    through muddy in-between colours (purity near 0.8 at the midpoint); a path that switches
    from one layout to the other keeps every frame a clean layout (1.0)."""
    inner = slice(1, len(rgb) - 1) if len(rgb) > 2 else slice(None)
    purity = palette_purity(rgb[inner])
    confidence = segmentation_confidence(segmentation[inner])
    return {
        "purity": purity.tolist(),
        "confidence": confidence.tolist(),
        "mean_purity": float(purity.mean()),
        "min_purity": float(purity.min()),
        "mean_confidence": float(confidence.mean()),
    }


def path_length_ratio(frames: torch.Tensor) -> float:
    """A description of a path, not a quality: ``sum_t ||F_{t+1} - F_t|| / ||F_T - F_0||``.
    It is exactly 1 for a pixel cross-fade (ghosting) and about sqrt(T - 1) for a crisp switch
    between two valid layouts, so lower is not smoother in any sense a layout model wants."""
    f = frames.double().flatten(1)
    ends = float((f[-1] - f[0]).norm())
    return float((f[1:] - f[:-1]).norm(dim=1).sum()) / ends if ends > 0 else math.inf


def nearest(queries: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Index in ``pool`` of each query's nearest latent (Euclidean over all elements)."""
    q, p = queries.double().flatten(1), pool.double().flatten(1)
    return torch.cdist(q, p).argmin(1)


def perturb(z: torch.Tensor, sigma: float, channel_std: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``z + sigma * std_c * eps``, eps ~ N(0, I): noise on each channel's own scale (one global
    std would give a channel of small spread proportionally much more noise than a wide one)."""
    eps = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z.device)
    return z + sigma * channel_std.to(z).view(1, -1, 1, 1) * eps


def decoded_change(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """``MSE(D(z + n), D(z))`` per image: how far latent noise moves the decoded layout, whatever
    the clean reconstruction's own error (a decoder worse without noise gains nothing here)."""
    return mse_per_image(noisy, clean)
