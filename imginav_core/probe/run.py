"""The diffusion probe: how well a latent diffusion model learns each run's latent space, measured
by what it generates.

For every finished run: encode the training layouts once, standardise the latents per channel,
train the same denoiser (architecture, steps, batch, seed) on them, generate layouts from the same
initial noise, decode them with that run's decoder and score them with the layout scorer against
the validation layouts. Beside that: the held-out denoising loss at fixed noise levels, the run's
own reconstructions scored the same way (the best its decoder allows, so a bad generation score can
be told apart from a bad decoder), and the cheap diffusability measures. Everything lands in
``OUTPUT_ROOT/<phase>/probe/probe_metrics.json``; a killed probe resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import torch

from ..analysis.runs import RunSummary, load_runs
from ..analysis.study import shared_config
from ..data.batches import CachedLayouts, LayoutData, load_data, to_model_inputs
from ..files import atomic_path, write_text_atomic
from ..images import save_png, to_uint8
from ..model import LayoutAutoencoder
from ..outputs import Outputs
from ..runtime import device_name, resolve_device
from ..scoring import LayoutScorer
from ..training.checkpoints import load_model
from . import diffusability as d
from .denoiser import heldout_losses, precision, sample_latents, train_denoiser, unet_layout
from .latents import EncodedLayouts, Standardiser, encode_layouts
from .reference import study_scorer
from .settings import ProbeSettings

# Validation layouts for the held-out loss and the diffusability measures.
HELDOUT_LIMIT = 1024
MEASURE_LIMIT = 128  # images through the encoder for the equivariance and scale measures
GRID_SIDE = 4  # the sample grid: 4 x 4 generated layouts


def run_probe(out: Outputs, names: list[str], settings: ProbeSettings, log: Callable[[str], None] = print) -> dict:
    """Probe every run in ``names`` (they must have finished, on the same data); write and return
    ``probe_metrics.json``."""
    runs, _ = load_runs(out, names)
    cfg = shared_config(runs, out.root)
    data = load_data(cfg, log)
    device = resolve_device(settings.device, "probe device")
    scorer, held, rng = study_scorer(data, out, settings.seed, device, log)
    heldout_positions = np.sort(rng.permutation(len(data.val))[:HELDOUT_LIMIT])
    save_png(out.probe_real_grid, _grid(held.subset(np.arange(min(GRID_SIDE**2, len(held.labels)))).rgb()))
    metrics = {
        "settings": settings.to_json(),
        "device": device_name(device),
        "precision": precision(device),
        "data": {
            "train": len(data.train),
            "validation": len(data.val),
            "resolution": cfg.data.resolution,
            "scored_against": len(held.labels),
            "heldout_latents": len(heldout_positions),
        },
        "layouts": _layout_spectrum(data.val, heldout_positions, runs[0]),
        "experiments": {},
    }
    for run in runs:
        log(f"probing the latent space of {run.name} ({device})")
        metrics["experiments"][run.name] = probe_run(run, data, heldout_positions, scorer, settings, device, out, log)
        write_text_atomic(out.probe_metrics, json.dumps(metrics, indent=1, allow_nan=True))
    log(f"probe metrics written to {out.shown(out.probe_metrics)}")
    return metrics


def _layout_spectrum(val: CachedLayouts, positions: np.ndarray, run: RunSummary) -> dict:
    """The high-frequency share of the layouts themselves, pooled to the latent grid: what a
    latent space that only re-encodes the class maps would show."""
    grid = run.config.data.resolution // 2**run.config.model.downsampling_steps
    class_maps = torch.from_numpy(val[positions]["class_map"].numpy())
    return {"high_frequency": _high_frequency(d.pooled_class_maps(class_maps, grid))}


def _high_frequency(latents: torch.Tensor) -> dict:
    """The high-frequency share, or why a grid too small to have one (2 x 2) is skipped."""
    try:
        return d.high_frequency_share(latents)
    except ValueError as err:
        return {"skipped": str(err), "share": None}


def probe_run(
    run: RunSummary,
    data: LayoutData,
    heldout_positions: np.ndarray,
    scorer: LayoutScorer,
    settings: ProbeSettings,
    device: torch.device,
    out: Outputs,
    log: Callable[[str], None],
) -> dict:
    _, model, _ = load_model(run.best_checkpoint, device)
    started = time.perf_counter()
    train_latents = encode_layouts(model, data.train, device)
    heldout_layouts = CachedLayouts(data.val.cache, data.val.indices[heldout_positions])
    heldout = encode_layouts(model, heldout_layouts, device)
    standardiser = Standardiser.fit(train_latents)
    encode_seconds = time.perf_counter() - started
    # The held-out latents as the denoiser would see them, the same draw for every latent space.
    heldout_z = standardiser.apply(
        heldout.draw(torch.arange(len(heldout)), torch.Generator().manual_seed(settings.seed))
    )

    seeds = [
        _probe_seed(run, train_latents, standardiser, heldout_z, settings, seed, device, out, log)
        for seed in settings.seed_list
    ]
    generated = np.concatenate(
        [
            _decode(model, standardiser, torch.load(out.probe_generated(run.name, seed), weights_only=True), device)
            for seed in settings.seed_list
        ]
    )
    save_png(out.probe_grid(run.name), _grid(generated[: GRID_SIDE**2]))
    log(f"{run.name}: scoring {len(generated)} generated layouts")
    generated_scores = scorer.score(generated, bootstrap=settings.bootstrap, seed=settings.seed)
    reconstructed_scores = scorer.score(
        _reconstruct(model, data.train, len(generated), settings.seed, device),
        bootstrap=settings.bootstrap,
        seed=settings.seed,
    )
    return {
        "label": run.label,
        "training_seed": run.config.training.seed,
        "variational": model.variational,
        "latent_shape": list(train_latents.shape),
        "denoiser_trained_on": (
            "a fresh posterior sample each time a layout is drawn"
            if model.variational
            else "the encoder's latent (deterministic)"
        ),
        "standardisation": standardiser.to_json(),
        "generated": generated_scores,
        "reconstructed": reconstructed_scores,
        "heldout_loss": _mean_over_seeds([s["heldout_loss"] for s in seeds]),
        "loss_curve": seeds[0]["curve"],
        "seeds": seeds,
        "diffusability": _diffusability(model, heldout, heldout_layouts, device),
        "encode_seconds": encode_seconds,
    }


def _probe_seed(
    run: RunSummary,
    train_latents: EncodedLayouts,
    standardiser: Standardiser,
    heldout_z: torch.Tensor,
    settings: ProbeSettings,
    seed: int,
    device: torch.device,
    out: Outputs,
    log: Callable[[str], None],
) -> dict:
    """One probe seed: train (or resume) the denoiser, measure it, generate; its result is kept
    in its folder, so a resubmitted probe skips what is done."""
    key = {
        **settings.training_key(),
        "samples": settings.samples,
        "ddim_steps": settings.ddim_steps,
        "noise_levels": list(settings.noise_levels),
        "seed": seed,
    }
    result_path, generated_path = out.probe_seed_result(run.name, seed), out.probe_generated(run.name, seed)
    if result_path.is_file() and generated_path.is_file():
        result = json.loads(result_path.read_text())
        if result.get("key") == key:
            log(f"{run.name} seed {seed}: done earlier ({out.shown(result_path)})")
            return result
    result_path.parent.mkdir(parents=True, exist_ok=True)
    log(
        f"{run.name} seed {seed}: training the denoiser for {settings.steps} steps "
        f"(UNet {unet_layout(train_latents.shape[1], settings.width)['block_out_channels']})"
    )
    denoiser, state = train_denoiser(
        train_latents, standardiser, settings, seed, out.probe_checkpoint(run.name, seed), device, log
    )
    started = time.perf_counter()
    generated = sample_latents(denoiser, settings.samples, train_latents.shape, settings.ddim_steps, seed)
    sampling_seconds = time.perf_counter() - started
    with atomic_path(generated_path) as tmp:
        torch.save(generated, tmp)
    result = {
        "key": key,
        "seed": seed,
        "steps": state.step,
        "training_seconds": state.seconds,
        "sampling_seconds": sampling_seconds,
        "curve": state.curve,
        "heldout_loss": heldout_losses(denoiser, heldout_z, settings.noise_levels, seed),
    }
    write_text_atomic(result_path, json.dumps(result, indent=1, allow_nan=True))
    return result


def _mean_over_seeds(values: list[dict[str, float]]) -> dict[str, float]:
    return {level: float(np.mean([v[level] for v in values])) for level in values[0]}


@torch.no_grad()
def _decode(
    model: LayoutAutoencoder,
    standardiser: Standardiser,
    latents: torch.Tensor,
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    return np.concatenate(
        [
            to_uint8(model.decode(standardiser.invert(latents[i : i + batch_size].to(device)))["rgb"])
            for i in range(0, len(latents), batch_size)
        ]
    )


@torch.no_grad()
def _reconstruct(
    model: LayoutAutoencoder, layouts: CachedLayouts, count: int, seed: int, device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """Reconstructions (through the posterior mean) of ``count`` training layouts drawn from ``seed``."""
    positions = np.sort(np.random.default_rng(seed).choice(len(layouts), size=count, replace=count > len(layouts)))
    images = []
    for start in range(0, count, batch_size):
        chunk = positions[start : start + batch_size]
        # Repeated positions (count > layouts) are read once each by the dataset: index the batch back.
        unique, inverse = np.unique(chunk, return_inverse=True)
        rgb, _, _ = to_model_inputs(layouts[unique], device)
        images.append(to_uint8(model.decode(model.encode(rgb))["rgb"])[inverse])
    return np.concatenate(images)


@torch.no_grad()
def _diffusability(
    model: LayoutAutoencoder, heldout: EncodedLayouts, layouts: CachedLayouts, device: torch.device
) -> dict:
    measures = {"high_frequency": {"mean": _high_frequency(heldout.mean)}}
    if heldout.std is not None:
        generator = torch.Generator().manual_seed(0)
        measures["high_frequency"]["samples"] = _high_frequency(heldout.draw(torch.arange(len(heldout)), generator))
    rgb, _, _ = to_model_inputs(layouts[np.arange(min(MEASURE_LIMIT, len(layouts)))], device)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return model.posterior(x).mean

    measures["equivariance"] = d.equivariance_errors(encode, rgb)
    measures["scale_consistency"] = d.scale_consistency(encode, model.decode, rgb)
    return measures


def _grid(images: np.ndarray, gap: int = 2) -> np.ndarray:
    """Images (N, H, W, 3) as a square grid with dark gaps."""
    side = int(np.ceil(np.sqrt(len(images))))
    h, w = images.shape[1:3]
    grid = np.full((side * (h + gap) - gap, side * (w + gap) - gap, 3), 40, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, side)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    return grid
