"""Cheap measures of how well a latent space would suit a diffusion model, run in seconds on
validation latents, before any diffusion model is trained on them.

- Spectrum (Skorokhodov et al., "Improving the Diffusability of Autoencoders", ICML 2025):
  latents with much high-frequency power diffuse worse, since diffusion models generate coarse
  structure first and are weakest at fine detail. ``high_frequency_share`` measures it; the
  layouts' own class maps, pooled to the latent grid (``pooled_class_maps``), are the reference
  of how much high frequency the content itself has.
- Equivariance (EQ-VAE, Kouzelis et al. 2025): a latent that transforms like its image under
  simple transforms is simpler to model. Top-down layouts have exact symmetries (90-degree
  rotations, flips), so ``equivariance_errors`` needs no interpolation.
- Scale consistency: a decoder that turns a 2x-pooled latent into the 2x-pooled image has a
  latent space whose coarse scales mean what they look like (``scale_consistency``).

Latents and images are NCHW tensors; every result is a dict of plain floats, lists and strings.
Sums are taken in float64 on the CPU, so results do not depend on the device or batch size.
"""

from __future__ import annotations

from collections.abc import Callable

import scipy.fft
import torch
import torch.nn.functional as F

from ...palette import IGNORE_INDEX, NUM_CLASSES

TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "rot90": lambda t: torch.rot90(t, 1, dims=(-2, -1)),
    "rot180": lambda t: torch.rot90(t, 2, dims=(-2, -1)),
    "rot270": lambda t: torch.rot90(t, 3, dims=(-2, -1)),
    "flip_h": lambda t: torch.flip(t, dims=(-1,)),  # mirror left-right
    "flip_v": lambda t: torch.flip(t, dims=(-2,)),  # mirror top-bottom
}
_QUARTER_TURNS = ("rot90", "rot270")  # the transforms that need a square grid


# ---- spectrum --------------------------------------------------------------------------------


def dct2(x: torch.Tensor) -> torch.Tensor:
    """2-D orthonormal DCT-II over the last two dims (Parseval: sum of squares is kept):
    ``y[u, v] = s_u s_v sum_ij x[i, j] cos(pi (2i + 1) u / (2h)) cos(pi (2j + 1) v / (2w))`` with
    ``s_0 = sqrt(1/n)``, ``s_k = sqrt(2/n)``; scipy's ``dctn`` (norm "ortho"), on the CPU."""
    y = scipy.fft.dctn(x.detach().cpu().numpy(), type=2, axes=(-2, -1), norm="ortho")
    return torch.from_numpy(y).to(x.device)


def _rounding_level(dtype: torch.dtype, magnitude: torch.Tensor) -> torch.Tensor:
    """The spread that rounding alone leaves in values of this magnitude: a channel that is
    constant in exact arithmetic is not exactly constant after a network's float arithmetic, and
    standardising that noise would pass it off as a signal."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return 16 * eps * magnitude


def high_frequency_share(latents: torch.Tensor, cutoff: float = 0.5) -> dict:
    """Share of each channel's spatial (AC) power at high frequencies, averaged over channels.

    Each channel is standardised (mean and std over all images and positions), each (image,
    channel) map of size h x w goes through the orthonormal 2-D DCT-II, and with ``P[u, v]`` its
    power ``coefficient^2``: a bin is *high* if ``max(u / h, v / w) >= cutoff`` (u / h = 1 would
    be the Nyquist frequency; DCT bin u has u / (2h) cycles per position). The DC bin (0, 0)
    carries the map's mean, not its spatial structure, and is left out. Per channel,
    ``share_c = sum over images of high power / sum over images of AC power``.

    - ``share``: mean of ``share_c`` over the channels that vary within their maps, so one
      channel counts as much as another whatever its scale;
    - ``pooled_share``: high power / AC power summed over all standardised channels, which weighs
      each channel by how much of its variance is spatial (robust to a channel whose maps are
      nearly flat and whose share is then set by tiny fluctuations);
    - ``per_channel``: ``share_c``, None for a channel constant within every map (no AC power).

    With ``cutoff`` 0.5 the high bins are what a grid half as fine cannot hold, so the share is
    the part of the power that 2x pooling would lose. I.i.d. noise puts the same expected power in
    every bin: its share is ``#high bins / (h w - 1)`` (0.8 on 4 x 4, 768 / 1023 on 32 x 32).
    """
    if latents.dim() != 4:
        raise ValueError(f"expected latents of shape (N, C, H, W), got {tuple(latents.shape)}")
    if not 0.0 < cutoff < 1.0:
        raise ValueError(f"cutoff must lie in (0, 1), got {cutoff}")
    h, w = latents.shape[-2:]
    u = torch.arange(h, dtype=torch.float64).view(-1, 1) / h
    v = torch.arange(w, dtype=torch.float64).view(1, -1) / w
    high = torch.maximum(u, v) >= cutoff
    high[0, 0] = False
    ac = torch.ones(h, w, dtype=torch.bool)
    ac[0, 0] = False
    if not bool(high.any()) or bool(high.equal(ac)):
        raise ValueError(f"a {h}x{w} grid has no low or no high AC bins at cutoff {cutoff}")

    z = latents.detach().to("cpu", torch.float64).transpose(0, 1)  # C, N, H, W
    flat = z.flatten(1)
    std = flat.std(1)
    varies = std > _rounding_level(latents.dtype, flat.abs().amax(1))
    z = (z - flat.mean(1).view(-1, 1, 1, 1)) / torch.where(varies, std, 1.0).view(-1, 1, 1, 1)
    power = dct2(z).pow(2).sum(1)  # C, H, W: summed over images
    ac_power = power[:, ac].sum(1)
    high_power = power[:, high].sum(1)
    varies &= ac_power > 1e-12 * power.sum((1, 2)).clamp_min(1e-300)
    per_channel = torch.where(varies, high_power / ac_power.clamp_min(1e-300), torch.nan)
    kept = per_channel[varies]
    pooled = float(high_power[varies].sum() / ac_power[varies].sum()) if bool(varies.any()) else None
    return {
        "share": float(kept.mean()) if len(kept) else None,
        "pooled_share": pooled,
        "per_channel": [float(s) if ok else None for s, ok in zip(per_channel.tolist(), varies.tolist())],
        "cutoff": float(cutoff),
        "grid": [int(h), int(w)],
        "high_bins": int(high.sum()),
        "ac_bins": int(ac.sum()),
        "definition": (
            "per channel standardised over images and positions; orthonormal 2-D DCT-II per "
            "(image, channel) map; share = power in bins (u, v) != (0, 0) with "
            f"max(u/h, v/w) >= {cutoff} over power in all bins except (0, 0), summed over images; "
            "share = mean over channels with AC power"
        ),
    }


def pooled_class_maps(class_maps, grid: int, chunk: int = 32) -> torch.Tensor:
    """One-hot class maps (N, H, W) of palette indices, area-pooled to a ``grid`` x ``grid``
    latent grid: (N, NUM_CLASSES, grid, grid) float32, each cell the share of its *valid* pixels
    in each class. ``IGNORE_INDEX`` pixels (off-palette colours) count for no class and are left
    out of the share, so anti-aliased edges do not dilute a cell; a cell with no valid pixel is
    all zeros. H and W must be multiples of ``grid`` (exact area pooling)."""
    maps = torch.as_tensor(class_maps).detach().cpu()
    if maps.dim() != 3:
        raise ValueError(f"expected class maps of shape (N, H, W), got {tuple(maps.shape)}")
    n, h, w = maps.shape
    if grid < 1 or h % grid or w % grid:
        raise ValueError(f"a {h}x{w} map does not pool exactly to a {grid}x{grid} grid")
    if len(maps) and (int(maps.min()) < 0 or int(maps.max()) > 255):
        raise ValueError("class maps hold values outside 0..255")
    bh, bw = h // grid, w // grid
    out = torch.empty(n, NUM_CLASSES, grid, grid, dtype=torch.float32)
    # A histogram of all 256 byte values per cell: one scatter instead of one pass per class, and
    # values that are neither a class nor IGNORE_INDEX show up in it. Chunks bound the int64
    # index (8 bytes a pixel: all of 400 images at 512 px would be 0.8 GB).
    for start in range(0, n, chunk):
        part = maps[start : start + chunk].long()
        m = len(part)
        values = part.view(m, grid, bh, grid, bw).permute(0, 1, 3, 2, 4).reshape(m, grid * grid, bh * bw)
        counts = torch.zeros(m, grid * grid, 256, dtype=torch.int32)
        counts.scatter_add_(2, values, torch.ones_like(values, dtype=torch.int32))
        stray = counts[..., NUM_CLASSES:].sum(-1) - counts[..., IGNORE_INDEX]
        if bool(stray.any()):
            raise ValueError(f"class maps hold values other than 0..{NUM_CLASSES - 1} and {IGNORE_INDEX}")
        classes = counts[..., :NUM_CLASSES].float()
        shares = classes / classes.sum(-1, keepdim=True).clamp_min(1.0)
        out[start : start + m] = shares.transpose(1, 2).reshape(m, NUM_CLASSES, grid, grid)
    return out


# ---- equivariance ---------------------------------------------------------------------------------


def _cpu64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def equivariance_errors(
    encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 64
) -> dict:
    """Relative equivariance error of ``encode`` (images -> latents, e.g. the posterior mean) under
    each exact symmetry T of a top-down layout (90/180/270-degree rotations, flips):

        err_T = mean_x ||E(T x) - T E(x)||^2 / mean_x ||E(x) - m||^2

    with squared norms summed over all latent elements and ``m`` the per-channel mean of E(x)
    over images and positions. 0 = exactly equivariant; two independent latents from the same
    distribution give about 2, so values near 2 mean T scrambles the latent completely; up to 4
    when T flips the latent's sign (E(T x) = -T E(x), an odd feature such as a gradient). Dividing by
    the latents' own variance makes the error invariant to their scale and offset.

    ``per_transform``: err_T (rot90 and rot270 are None for non-square images); ``mean``: their
    mean; ``latent_variance``: the denominator, per image. If the latents do not vary at all
    (a collapsed encoder is trivially "equivariant") the errors are None, not 0."""
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    square = images.shape[-1] == images.shape[-2]
    names = [t for t in TRANSFORMS if square or t not in _QUARTER_TURNS]
    errors = dict.fromkeys(names, 0.0)
    latents = []
    with torch.no_grad():
        for batch in images.split(batch_size):
            z = encode(batch)
            dtype = z.dtype
            latents.append(_cpu64(z))
            for name in names:
                t = TRANSFORMS[name]
                diff = _cpu64(encode(t(batch))) - _cpu64(t(z))
                errors[name] += float(diff.pow(2).sum())
    z = torch.cat(latents)
    centred = z - z.mean((0, 2, 3), keepdim=True)
    variance = float(centred.pow(2).sum()) / len(z)
    if variance <= float(_rounding_level(dtype, z.abs().max())) ** 2 * z[0].numel():
        per_transform = {name: None for name in TRANSFORMS}
        return {"per_transform": per_transform, "mean": None, "latent_variance": variance}
    per_transform = {name: (errors[name] / len(z) / variance if name in errors else None) for name in TRANSFORMS}
    kept = [v for v in per_transform.values() if v is not None]
    return {"per_transform": per_transform, "mean": sum(kept) / len(kept), "latent_variance": variance}


# ---- scale consistency ------------------------------------------------------------------------------


def _rgb(decoded) -> torch.Tensor:
    return decoded["rgb"] if isinstance(decoded, dict) else decoded


def scale_consistency(
    encode: Callable[[torch.Tensor], torch.Tensor],
    decode: Callable,
    images: torch.Tensor,
    factor: int = 2,
    batch_size: int = 64,
) -> dict:
    """How well the decoder turns a coarsened latent into the coarsened image.

    The latent is average-pooled by ``factor``; the (fully convolutional) decoder then returns an
    image ``factor`` times smaller, which is compared with the input area-pooled to that size:

        relative_mse = mean (D(pool(E(x))) - pool(x))^2 / Var(pool(x))
        reference_relative_mse = mean (D(E(x)) - x)^2 / Var(x)

    with Var the per-element variance of the images around their per-channel mean (so the
    ratio is unit-free: about 1 = no better than the mean colour). The reference is the ordinary
    reconstruction error on the same scale: a latent space is scale-consistent when the first
    is not much above the second. ``decode`` may return a tensor or the model's dict ("rgb").

    Skipped (``{"skipped": reason}``) when the latent grid is not a multiple of ``factor`` or
    pooling would leave fewer than 2 x 2 positions: a single latent vector has no layout to
    keep, and the decoder's zero padding would dominate it. 4 x 4 -> 2 x 2 is measured.
    """
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    sums = {"pooled": 0.0, "reference": 0.0}
    targets, full = [], []
    with torch.no_grad():
        for batch in images.split(batch_size):
            z = encode(batch)
            h, w = z.shape[-2:]
            if h % factor or w % factor or h // factor < 2 or w // factor < 2:
                return {"skipped": f"a {h}x{w} latent grid does not pool by {factor} to at least 2x2", "factor": factor}
            coarse = _rgb(decode(F.avg_pool2d(z, factor)))
            ch, cw = coarse.shape[-2:]
            if batch.shape[-2] % ch or batch.shape[-1] % cw:
                return {
                    "skipped": f"the {ch}x{cw} decoded image does not divide the "
                    f"{batch.shape[-2]}x{batch.shape[-1]} input",
                    "factor": factor,
                }
            x = _cpu64(batch)
            target = F.avg_pool2d(x, (x.shape[-2] // ch, x.shape[-1] // cw))
            sums["pooled"] += float((_cpu64(coarse) - target).pow(2).sum())
            sums["reference"] += float((_cpu64(_rgb(decode(z))) - x).pow(2).sum())
            targets.append(target)
            full.append(x)

    def variance(t: torch.Tensor) -> float:
        return float((t - t.mean((0, 2, 3), keepdim=True)).pow(2).mean())

    target, x = torch.cat(targets), torch.cat(full)
    mse = sums["pooled"] / target.numel()
    reference = sums["reference"] / x.numel()
    v_target, v_x = variance(target), variance(x)
    return {
        "factor": factor,
        "mse": mse,
        "relative_mse": mse / v_target if v_target > 0 else None,
        "reference_mse": reference,
        "reference_relative_mse": reference / v_x if v_x > 0 else None,
        "target_size": [int(target.shape[-2]), int(target.shape[-1])],
    }
