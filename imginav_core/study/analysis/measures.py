"""The measurements of Phase 1.2, each a small function with its formula.

Images are NCHW float tensors in the model's range [-1, 1]; latents NCHW. Every function is
deterministic given its inputs (noise comes from an explicit ``torch.Generator``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from ...model import DiagonalGaussian
from ...palette import CLASS_NAMES, PALETTE, PURITY_TOLERANCE
from .criteria import Rule

# The rule's thresholds (``Rule``, recorded in the protocol), as measured by default: a unit is
# active if Var_x(E_q[z|x]) exceeds the first (Burda et al. 2016); fewer active units than the
# second share is collapse. The decision judges collapse from the measured share with its own rule.
ACTIVE_UNIT_THRESHOLD = Rule.active_unit_variance
COLLAPSE_SHARE = Rule.collapse_active_share


# ---- reconstruction --------------------------------------------------------------------


def mse_per_image(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean((prediction - target)^2)`` over C, H, W, in the [-1, 1] range (the training loss's scale)."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(1)


SSIM_SIGMA = 1.5  # Wang et al. (2004): a Gaussian window of std 1.5 pixels ...
SSIM_RADIUS = 5  # ... cut at 3.5 sigma: 11 taps, as torchmetrics' structural_similarity_index_measure
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # (k1 L)^2, (k2 L)^2 for the data range L = 1


def _gaussian_taps(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=dtype, device=device)
    taps = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return taps / taps.sum()


def _window_mean(image: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted local mean of a (C, H + 2r, W + 2r) padded image: (C, H, W). The 2-D
    window is the outer product of the 1-D taps, applied as two 1-D passes of shifted slices: no
    im2col buffer, which for an 11 x 11 window in float64 holds ~121 copies of the image."""
    width = len(taps)
    rows = image.shape[-2] - width + 1
    cols = image.shape[-1] - width + 1
    vertical = sum(taps[k] * image[:, k : k + rows, :] for k in range(width))
    return sum(taps[k] * vertical[:, :, k : k + cols] for k in range(width))


def ssim_per_image(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of each image, compared in [0, 1]: the mean over
    channels and pixels of ``(2 mu_p mu_t + C1)(2 s_pt + C2) / ((mu_p^2 + mu_t^2 + C1)(s_p^2 + s_t^2
    + C2))`` with local Gaussian statistics (window std 1.5, 11 taps, reflected borders): what
    torchmetrics' ``structural_similarity_index_measure`` computes. 1.0 = identical.

    One image at a time, in float64 (in float32, E[x^2] - E[x]^2 over flat layout regions leaves
    errors of ~1e-3): the memory is that of a few copies of one image, whatever the batch.
    Images need more than ``SSIM_RADIUS`` pixels a side (reflected borders)."""
    if min(prediction.shape[-2:]) <= SSIM_RADIUS:
        raise ValueError(f"SSIM needs images wider than {SSIM_RADIUS} pixels, got {tuple(prediction.shape[-2:])}")
    taps = _gaussian_taps(torch.float64, prediction.device)
    out = torch.empty(len(prediction), dtype=torch.float64)
    pad = (SSIM_RADIUS,) * 4
    for i in range(len(prediction)):
        p = F.pad((prediction[i : i + 1].double().clamp(-1, 1) + 1) / 2, pad, mode="reflect")[0]
        t = F.pad((target[i : i + 1].double() + 1) / 2, pad, mode="reflect")[0]
        mu_p, mu_t = _window_mean(p, taps), _window_mean(t, taps)
        var_p = (_window_mean(p * p, taps) - mu_p**2).clamp_min(0)
        var_t = (_window_mean(t * t, taps) - mu_t**2).clamp_min(0)
        cov = _window_mean(p * t, taps) - mu_p * mu_t
        index = ((2 * mu_p * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)) / (
            (mu_p**2 + mu_t**2 + SSIM_C1) * (var_p + var_t + SSIM_C2)
        )
        out[i] = index.mean()
    return out.float()


def _gradient(images: torch.Tensor) -> torch.Tensor:
    """Per pixel ``|I[y, x+1] - I[y, x]| + |I[y+1, x] - I[y, x]|`` summed over channels: (N, H-1, W-1)."""
    images = images.float()
    dx = (images[..., :-1, 1:] - images[..., :-1, :-1]).abs()
    dy = (images[..., 1:, :-1] - images[..., :-1, :-1]).abs()
    return (dx + dy).sum(1)


def edge_energy(reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient energy at the input's edges, per image: ``(sum_E |grad R|, sum_E |grad I|)`` over the
    pixels E where the input changes colour (walls, furniture outlines).

    Their ratio is the *sharpness ratio*: 1.0 = edges as crisp as in the input, lower = blurred,
    higher = ringing or noise at the edges (so higher is not better: ``sharpness_error``).
    Measuring only at the input's edges keeps noise in flat regions from passing for sharpness."""
    g_target = _gradient(target)
    edges = (g_target > 1e-3).float()
    return (_gradient(reconstruction) * edges).flatten(1).sum(1), (g_target * edges).flatten(1).sum(1)


EDGE_ENERGY_FLOOR = 1.0  # added to both sides of the sharpness ratio: one full-range step of one channel is 2.0


def sharpness_error(sharp_out: torch.Tensor, sharp_in: torch.Tensor) -> torch.Tensor:
    """Per image ``|log((sharp_out + e) / (sharp_in + e))|`` with ``e = EDGE_ENERGY_FLOOR``, from
    ``edge_energy``: how far the reconstruction's edges are from the input's in either direction.
    0 = as sharp as the input; blur (ratio below 1) and ringing or noise at the edges (above 1)
    both score above 0, so lower is better and overshooting cannot pass for crispness. ``e``
    keeps a layout without edges at 0 and a flat reconstruction finite.
    One number per image cannot tell blur on some edges from ringing on others that cancels it;
    SSIM and MSE see that."""
    return ((sharp_out.double() + EDGE_ENERGY_FLOOR) / (sharp_in.double() + EDGE_ENERGY_FLOOR)).log().abs()


def palette_purity(images: torch.Tensor, tolerance: float = PURITY_TOLERANCE) -> torch.Tensor:
    """Share of each image's pixels whose colour lies within ``tolerance`` (Euclidean, 0-255 RGB)
    of some palette colour: 1.0 = a clean layout, lower = in-between, muddy colours."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1)  # N, H, W, 3
    palette = torch.tensor(PALETTE, dtype=torch.float32, device=images.device)
    nearest = torch.cdist(pixels.reshape(len(images), -1, 3), palette.expand(len(images), -1, -1)).amin(-1)
    return (nearest <= tolerance).float().mean(1)


# The classes a blurry decoder loses first: small objects of a few pixels.
SMALL_CLASSES = ("chair", "lighting", "pier/stool")


def small_class_counts(prediction: torch.Tensor, class_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and small class: intersection and union pixel counts of the predicted and true
    class maps, (N, K) each (their ratio of sums is the small-class IoU)."""
    inter, union = [], []
    for name in SMALL_CLASSES:
        c = CLASS_NAMES.index(name)
        pred, true = prediction == c, class_map == c
        inter.append((pred & true).flatten(1).sum(1))
        union.append((pred | true).flatten(1).sum(1))
    return torch.stack(inter, 1).double(), torch.stack(union, 1).double()


def segmentation_confidence(logits: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of the segmentation head's top softmax probability, per image."""
    return logits.float().softmax(1).amax(1).flatten(1).mean(1)


# ---- latent space --------------------------------------------------------------------------


def latent_statistics(latents: torch.Tensor) -> dict:
    """What a latent diffusion model trained on ``latents`` would see: per-channel mean, standard
    deviation and excess kurtosis ``E[(z - m)^4] / s^4 - 3`` (0 for a Gaussian, large = heavy
    tails), each channel on its own scale — pooled over channels of unequal scale the kurtosis
    of Gaussians is not 0 (std 0.5 and 2 pool to 2.3); and the scale factor ``1 / std`` over
    everything, the one number latent diffusion multiplies its latents by. In float64, one
    channel at a time (a float64 copy of all latents of 512 layouts at 512 x 512 is 134 MB)."""
    mean, std, kurtosis = [], [], []
    for c in range(latents.shape[1]):
        z = latents[:, c].double().flatten()
        centred = z - z.mean()
        mean.append(float(z.mean()))
        std.append(float(z.std()))
        kurtosis.append(float(centred.pow(4).mean() / centred.pow(2).mean().pow(2) - 3.0))
    overall = sum(mean[c] * latents[:, c].numel() for c in range(len(mean))) / latents.numel()
    squares = sum(float((latents[:, c].double() - overall).pow(2).sum()) for c in range(len(mean)))
    overall_std = math.sqrt(squares / (latents.numel() - 1))
    excess = torch.tensor(kurtosis, dtype=torch.float64)
    return {
        "channel_mean": mean,
        "channel_std": std,
        "channel_excess_kurtosis": kurtosis,
        "max_channel_excess_kurtosis": float(excess.max()),
        "median_channel_excess_kurtosis": float(excess.median()),
        "std": overall_std,
        "scale_factor": 1.0 / overall_std if overall_std > 0 else math.inf,
    }


def posterior_health(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    kld_weight: float,
    pixels: int,
    total_loss: float,
    *,
    active_threshold: float = ACTIVE_UNIT_THRESHOLD,
    collapse_share: float = COLLAPSE_SHARE,
) -> dict:
    """The VAE's posterior as measured on images whose posterior is N(mu, exp(logvar)).

    The KL is trained as a mean over latent elements, so its size needs units: ``kl_nats_per_element``;
    ``kl_bits_per_pixel`` = the KL of a whole image (summed over its latent elements) in bits, per
    image pixel; ``kl_share_of_loss`` = the weighted KL over the validation loss it was part of.
    Active units (Burda et al. 2016): units whose posterior mean varies across images,
    ``Var_x(E[z_u|x]) > active_threshold`` (recorded as ``active_threshold``), counted unit by unit;
    a VAE normally leaves some inactive, so only almost none active (below ``collapse_share``) is
    collapse. Both default to the rule's (``Rule.active_unit_variance``, ``Rule.collapse_active_share``).
    ``noise_to_signal`` per channel: ``mean sigma_q / std_x(mu)``, the posterior's own noise against
    the spread of its means — near 1 or above, the decoder was trained on latents mostly noise. In float64, one channel
    at a time."""
    kl_per_channel, kl_per_image, sigma, spread = [], torch.zeros(len(mu), dtype=torch.float64), [], []
    for c in range(mu.shape[1]):
        m_c, lv_c = mu[:, c].double(), logvar[:, c].double()
        kl = DiagonalGaussian(m_c, lv_c).kl_elements()
        kl_per_channel.append(float(kl.mean()))
        kl_per_image += kl.flatten(1).sum(1)
        sigma.append(float((0.5 * lv_c).exp().mean()))
        spread.append(float(m_c.flatten().std()))
    nats = float(torch.tensor(kl_per_channel, dtype=torch.float64).mean())  # channels have equal numbers of elements
    # Var_x(E[z_u | x]) of every latent unit u = (channel, row, column)
    activity = torch.stack([mu[:, c].double().var(0) for c in range(mu.shape[1])])
    active = activity > active_threshold
    noise_to_signal = torch.tensor(sigma, dtype=torch.float64) / torch.tensor(spread, dtype=torch.float64).clamp_min(
        1e-12
    )
    share = float(active.double().mean())
    return {
        "kl_nats_per_element": nats,
        "kl_weighted": nats * kld_weight,
        "kl_bits_per_pixel": float(kl_per_image.mean()) / math.log(2) / pixels,
        "kl_share_of_loss": nats * kld_weight / total_loss if total_loss > 0 else math.nan,
        "kl_per_channel": kl_per_channel,
        "active_units": int(active.sum()),
        "units": int(active.numel()),
        "active_share": share,
        "active_share_per_channel": active.double().mean((1, 2)).tolist(),
        "noise_to_signal_per_channel": noise_to_signal.tolist(),
        "median_noise_to_signal": float(noise_to_signal.median()),
        "active_threshold": active_threshold,
        "collapsed": share < collapse_share,
    }


# ---- paths through the latent space -------------------------------------------------------------


def lerp(z0: torch.Tensor, z1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Straight line ``(1 - a) z0 + a z1`` for each alpha: (T, C, H, W)."""
    a = alphas.view(-1, 1, 1, 1).to(z0)
    return (1 - a) * z0 + a * z1


class PathTrace:
    """The numbers of a path's decoded frames F_0..F_{T-1}, fed in order a chunk of consecutive
    frames at a time (``add``), so that only one chunk of full-resolution frames is ever held,
    whatever T. It keeps per frame the palette purity and segmentation confidence, per step the
    L1 and L2 distances ``F_{t+1} - F_t``, and the first and last frame."""

    def __init__(self) -> None:
        self.purity: list[float] = []
        self.confidence: list[float] = []
        self.l1: list[float] = []  # ||F_{t+1} - F_t||_1 per step
        self.l2: list[float] = []  # ||F_{t+1} - F_t||_2 per step
        self.first: torch.Tensor | None = None
        self.last: torch.Tensor | None = None

    def add(self, rgb: torch.Tensor, segmentation: torch.Tensor | None = None) -> PathTrace:
        """The next frames of the path, in order (RGB and, for the confidence, segmentation logits)."""
        frames = rgb.double().flatten(1)
        joined = frames if self.last is None else torch.cat([self.last[None], frames])
        steps = joined[1:] - joined[:-1]
        self.l1 += steps.abs().sum(1).tolist()
        self.l2 += steps.norm(dim=1).tolist()
        if self.first is None:
            self.first = frames[0].clone()
        self.last = frames[-1].clone()
        self.purity += palette_purity(rgb).tolist()
        if segmentation is not None:
            self.confidence += segmentation_confidence(segmentation).tolist()
        return self

    @property
    def frames(self) -> int:
        return len(self.purity)

    def _ends(self, norm: float) -> float:
        assert self.first is not None and self.last is not None, "no frames added"
        return float((self.last - self.first).norm(p=norm))

    def gradualness(self) -> float:
        """How evenly the path spreads its change over its steps: ``g = d / ((T - 1) max_t s_t)``
        with ``s_t = ||F_{t+1} - F_t||_1`` and ``d = ||F_{T-1} - F_0||_1`` (L1 over pixels and
        channels). 1 when every step moves the same amount and no step undoes another (a
        cross-fade, or a wipe that turns a share of B's pixels at each step); ``1 / (T - 1)`` when
        one step does it all (a hard switch); lower still for a path that oscillates or detours
        (its largest step exceeds the even share of the end-to-end change). L1, not L2: in L2 a
        wipe's steps look sqrt(T - 1) times larger than a cross-fade's, though both move as much
        colour per step. 0 when both ends decode alike (``d = 0``): the decoder does not tell the
        two layouts apart, so there is no path between them to credit."""
        ends, largest = self._ends(1), max(self.l1, default=0.0)
        return ends / ((self.frames - 1) * largest) if ends > 0 and largest > 0 else 0.0

    def length_ratio(self) -> float:
        """``sum_t ||F_{t+1} - F_t||_2 / ||F_{T-1} - F_0||_2``: see ``path_length_ratio``."""
        ends = self._ends(2)
        return sum(self.l2) / ends if ends > 0 else math.inf

    def validity(self) -> dict:
        """``path_validity``'s measures of the frames added."""
        if self.frames < 3:
            raise ValueError(f"a path needs at least 3 frames (its two ends and one between), got {self.frames}")
        inner = torch.tensor(self.purity[1:-1], dtype=torch.float64)
        ends = (self.purity[0] + self.purity[-1]) / 2
        relative = float(inner.mean()) / ends if ends > 0 else 0.0
        smooth = self.gradualness()
        confidence = self.confidence[1:-1]
        return {
            "purity": inner.tolist(),
            "confidence": confidence,
            "mean_purity": float(inner.mean()),
            "min_purity": float(inner.min()),
            "end_purity": ends,
            "mean_confidence": float(np.mean(confidence)) if confidence else math.nan,
            "relative_purity": relative,
            "gradualness": smooth,
            "validity": relative * smooth,
        }


def path_validity(rgb: torch.Tensor, segmentation: torch.Tensor) -> dict:
    """Is what lies between two layouts still a layout, and do the frames get there gradually?
    For the decoded frames (T >= 3) of a path, the ends being the two reconstructions:

        validity = relative_purity * gradualness
        relative_purity = mean_{0<t<T-1} P(F_t) / mean(P(F_0), P(F_{T-1}))
        gradualness = ||F_{T-1} - F_0||_1 / ((T - 1) max_t ||F_{t+1} - F_t||_1)

    P is the palette purity. Higher is better; 1 = every inner frame as clean as the
    reconstructions and the change spread evenly over the steps. The baseline is the step path
    between the same reconstructions (A until alpha 0.5, then B): its frames are as clean as its
    ends and it changes in one step, so it scores about ``1 / (T - 1)`` (exactly, when A and B are
    equally clean), as does a hard switch at any alpha, and a path that oscillates between the
    two clean layouts no more. A ghosting cross-fade is gradual but its in-between frames are
    muddy (relative purity near 0.8 at the midpoint); a path through clean layouts that turns A
    into B a little at each step scores near 1. Purity relative to the ends, so that a uniformly
    blurrier decoder is not charged here for blur already in its reconstructions (the
    reconstruction criteria measure that). Also returned: each inner frame's purity and
    segmentation confidence (mean top softmax probability), their mean and the worst frame."""
    return PathTrace().add(rgb, segmentation).validity()


def path_length_ratio(frames: torch.Tensor) -> float:
    """A description of a path, not a quality: ``sum_t ||F_{t+1} - F_t|| / ||F_T - F_0||``.
    It is exactly 1 for a pixel cross-fade (ghosting) and about sqrt(T - 1) for a crisp switch
    between two valid layouts, so lower is not smoother in any sense a layout model wants."""
    return PathTrace().add(frames).length_ratio()


def nearest(queries: torch.Tensor, pool: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Index in ``pool`` of each query's nearest latent (Euclidean over all elements), ``chunk``
    queries at a time (float64 distances: the memory grows with the pool, not the queries)."""
    p = pool.double().flatten(1)
    found = [torch.cdist(q.double().flatten(1), p).argmin(1) for q in queries.split(chunk)]
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.int64)


def perturb(z: torch.Tensor, sigma: float, channel_std: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``z + sigma * std_c * eps``, eps ~ N(0, I): noise on each channel's own scale (one global
    std would give a channel of small spread proportionally much more noise than a wide one)."""
    eps = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z.device)
    return z + sigma * channel_std.to(z).view(1, -1, 1, 1) * eps


def relative_change(change: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Per image ``rho = c / (c + d)``: the decoded change under latent noise ``c = MSE(D(z_i + n),
    D(z_i))`` against the decoded distance to a different layout ``d = MSE(D(z_i), D(z_j(i)))``.
    0 = noise moves nothing; 0.5 = noise moves the layout as far as swapping it for another one;
    towards 1 = far more. Lower is better. Scale-free: a decoder whose output is multiplied by a
    constant scores the same (both terms scale alike), and a decoder that ignores its latent
    (c = d = 0) scores 1, the worst, not 0: its robustness is that of a decoder that encodes
    nothing. Bounded, so no layout pair that happens to decode alike dominates a mean."""
    c, d = change.double(), spread.double()
    total = c + d
    return torch.where(total > 0, c / total.clamp_min(torch.finfo(torch.float64).tiny), torch.ones_like(total))
