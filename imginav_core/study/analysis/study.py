"""Measure every run of every arm (V1: deterministic, V2: VAE; one run per training seed) on the
same test layouts, pairs and noise (``evaluation.py`` chooses them) and write
``OUTPUT_ROOT/<phase>/analysis/latent_metrics.json`` and ``per_image.csv``.

Per run, one pass over the test layouts collects reconstruction quality (all, rooms, scenes),
blur, latents and the posterior; then latent noise on each channel's own scale, decoded and
compared with the clean decoding and with the decoding of the layout's noise partner; then the
midpoint between each test latent and its nearest training latent; then the pairs of layouts
interpolated on the same straight path.

Memory: every model call and every image-sized measure works on one chunk of layouts or path
frames (``AnalysisSettings.batch_size``, at most ``chunk_pixels`` pixels: 2 layouts at 512 x 512),
and only per-image numbers, latents and small copies of the frames are kept; so the peak is set
by the chunk, not by the number of layouts, pairs, frames or noise levels. (SSIM of a batch of 16
layouts at 512 x 512, computed at once in float64 by an 11 x 11 convolution, once took 21 GB.)

Progress: each run's measuring moves a bar chunk by chunk (``work_chunks``), drawn by
``training.progress``: a live bar in Jupyter, a few lines in a batch job's log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...data.batches import EVALUATION_SPLIT, CachedLayouts, load_data, to_model_inputs
from ...files import write_text_atomic
from ...images import to_uint8
from ...metrics import confusion, miou, pixel_accuracy, psnr_per_image
from ...palette import NUM_CLASSES, class_map_hash, class_to_rgb
from ...runtime import StageMeter, resolve_device
from ...training.checkpoints import load_model
from ...training.progress import progress_bar
from ..probe.reference import study_scorer
from ..probe.settings import DEFAULTS as PROBE_DEFAULTS
from ..runs import RunSummary, shared_config
from . import measures as m
from .evaluation import PAIR_KINDS, ModelResult, Study, choose_layouts, choose_pairs, chunk_size, noise_partners
from .settings import AnalysisSettings


def _frames_uint8(images: torch.Tensor, size: int) -> np.ndarray:
    if images.shape[-1] > size:
        images = F.interpolate(images.float(), size=(size, size), mode="area")
    return to_uint8(images)


def _release_freed_memory() -> None:
    """Give the memory freed since the last call back to the operating system (glibc's
    ``malloc_trim``; elsewhere nothing). glibc keeps freed blocks of a few MB in its heap for
    reuse, and chunk after chunk of image-sized tensors of varying sizes fragments it: at 512 x 512
    the resident size grew by ~0.5 GB from 16 to 64 layouts measured, though nothing alive grew."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


try:
    _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _MALLOC_TRIM = None


Advance = Callable[[int], None]  # told each finished chunk: a progress bar's update


def _unseen(_chunks: int) -> None:
    """No progress shown."""


def _chunks(count: int, size: int, advance: Advance = _unseen):
    """Slices of ``range(count)`` of at most ``size``, freed memory released after each (and
    ``advance(1)`` told)."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))
        _release_freed_memory()
        advance(1)


def _batches(study: Study, layouts: CachedLayouts, positions: np.ndarray, device, advance: Advance = _unseen):
    """(rgb, class_map, label) batches of ``study.chunk`` over ``positions``, in the cache's row
    order, which is the order a batch comes back in."""
    for part in _chunks(len(positions), study.chunk, advance):
        yield to_model_inputs(layouts[positions[part]], device)


def work_chunks(study: Study) -> int:
    """The chunks ``measure_model`` works through for one run, its progress bar's total: the
    measured layouts three times (reconstruction, latent noise, nearest-neighbour midpoints), the
    neighbour pool once, each pair's path, the examples."""

    def chunks(count: int) -> int:
        return -(-count // study.chunk)

    pool = min(study.settings.neighbour_pool, len(study.data.train))
    return (
        3 * chunks(len(study.positions))
        + chunks(pool)
        + len(study.pairs) * chunks(len(study.alphas))
        + chunks(len(study.example_positions))
    )


def _layout_identities(layouts: CachedLayouts, positions: np.ndarray, chunk: int) -> list[str]:
    """The class-map hash of each layout at ``positions`` (in the cache's row order)."""
    hashes = []
    for part in _chunks(len(positions), chunk):
        hashes += [class_map_hash(c) for c in layouts[positions[part]]["class_map"].numpy()]
    return hashes


def _summarise(per_image: dict[str, np.ndarray], types: np.ndarray, matrices: dict[str, torch.Tensor]) -> dict:
    out = {}
    for subset, mask in (("all", np.ones_like(types, dtype=bool)), ("room", types == 0), ("scene", types == 1)):
        if not mask.any():
            continue
        sel = {k: v[mask] for k, v in per_image.items()}
        inter, union = sel["small_inter"].sum(0), sel["small_union"].sum(0)
        out[subset] = {
            "images": int(mask.sum()),
            "mse": float(sel["mse"].mean()),
            "psnr": float(sel["psnr"].mean()),
            "ssim": float(sel["ssim"].mean()),
            "miou": miou(matrices[subset]),
            "small_class_iou": float(np.mean([i / u for i, u in zip(inter, union) if u > 0]))
            if union.any()
            else math.nan,
            "pixel_accuracy": pixel_accuracy(matrices[subset]),
            "classification_accuracy": float(sel["correct"].mean()),
            "sharpness_ratio": float(sel["sharp_out"].sum() / max(sel["sharp_in"].sum(), 1e-12)),
            "sharpness_error": float(sel["sharpness_error"].mean()),
            "palette_purity": float(sel["purity"].mean()),
            "input_palette_purity": float(sel["purity_in"].mean()),
        }
    return out


def reconstruction_per_image(rgb: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-image reconstruction measures of a batch, by ``per_image`` key: ``mse``, ``psnr``,
    ``ssim``, ``sharp_out`` / ``sharp_in`` (gradient energy at the input's edges), ``sharpness_error``
    (``|log|`` of their ratio), ``purity`` (of the reconstruction) and ``purity_in`` (of the input)."""
    sharp_out, sharp_in = m.edge_energy(rgb, target)
    return {
        "mse": m.mse_per_image(rgb, target),
        "psnr": psnr_per_image(rgb, target),
        "ssim": m.ssim_per_image(rgb, target),
        "sharp_in": sharp_in,
        "sharp_out": sharp_out,
        "sharpness_error": m.sharpness_error(sharp_out, sharp_in),
        "purity_in": m.palette_purity(target),
        "purity": m.palette_purity(rgb),
    }


def reconstruction_pass(model, study: Study, device, advance: Advance = _unseen, measures=reconstruction_per_image):
    """One pass over the measured layouts: (the per-image measures by ``per_image`` key, from
    ``measures`` of each reconstruction and its input and the small-class counts; the confusion
    matrices of all layouts, rooms and scenes; the posterior means; a VAE's log-variances, None for
    a deterministic encoder; and the latents a diffusion model trained on the space would see: a
    VAE's posterior samples, seeded)."""
    per_image: dict[str, list] = defaultdict(list)
    matrices = {k: torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64) for k in ("all", "room", "scene")}
    means, logvars, seen = [], [], []
    sampling = torch.Generator().manual_seed(study.settings.seed)
    for x, class_map, label_ in _batches(study, study.layouts, study.positions, device, advance):
        posterior = model.posterior(x)
        z = posterior.mode()
        out = model.decode(z)
        means.append(z.cpu())
        if posterior.deterministic:
            seen.append(z.cpu())
        else:
            logvars.append(posterior.logvar.cpu())
            eps = torch.randn(z.shape, generator=sampling)
            seen.append(z.cpu() + (0.5 * posterior.logvar.cpu()).exp() * eps)
        for key, values in measures(out["rgb"], x).items():
            per_image[key].append(values.cpu())
        per_image["correct"].append((out["classification"].argmax(1) == label_).float().cpu())
        prediction = out["segmentation"].argmax(1)
        inter, union = m.small_class_counts(prediction, class_map)
        per_image["small_inter"].append(inter.cpu())
        per_image["small_union"].append(union.cpu())
        for subset, mask in (("all", label_ >= 0), ("room", label_ == 0), ("scene", label_ == 1)):
            if bool(mask.any()):
                matrices[subset] += confusion(prediction[mask], class_map[mask]).cpu()
        del out, posterior, x
    arrays = {k: torch.cat(v).double().numpy() for k, v in per_image.items()}
    return arrays, matrices, torch.cat(means), torch.cat(logvars) if logvars else None, torch.cat(seen)


@torch.no_grad()
def measure_model(
    run: RunSummary, label: str, study: Study, device: torch.device, advance: Advance = _unseen
) -> ModelResult:
    """Every measure of one run; ``advance(1)`` after each of its ``work_chunks(study)`` chunks."""
    s = study.settings
    cfg, model, _ = load_model(run.best_checkpoint, device)
    arrays, matrices, z_all, logvars, z_seen = reconstruction_pass(model, study, device, advance)
    types = study.layouts.types[study.positions]
    metrics: dict = {
        "experiment": run.name,
        "arm": label,
        "seed": run.config.training.seed,
        "variational": cfg.model.variational,
        "reconstruction": _summarise(arrays, types, matrices),
        "latent": m.latent_statistics(z_seen) | {"of": "posterior samples" if cfg.model.variational else "latents"},
    }
    if cfg.model.variational:
        metrics["posterior"] = posterior_health(run, cfg, z_all, logvars)
    channel_std = torch.tensor(metrics["latent"]["channel_std"], dtype=torch.float32)
    partners = study.partners if study.partners is not None else np.arange(len(z_all))
    noise = noise_robustness(
        lambda z: model.decode(z)["rgb"], z_all, partners, channel_std, s.sigmas, s.seed, study.chunk, device, advance
    )
    metrics["noise"] = {
        "sigmas": list(s.sigmas),
        "scale": "each channel's std of " + metrics["latent"]["of"],
        "decoded_change": [float(noise[f"change_sigma{sigma:g}"].mean()) for sigma in s.sigmas],
        "decoded_spread": float(noise["decoded_spread"].mean()),
        "relative_change": [float(noise[f"noise_relative_sigma{sigma:g}"].mean()) for sigma in s.sigmas],
    }
    if "posterior" in metrics:
        metrics["noise"]["posterior_noise_to_signal"] = metrics["posterior"]["median_noise_to_signal"]
    arrays.update(noise)
    neighbour = _nearest_neighbour_midpoints(model, study, z_all, device, advance)
    arrays.update(neighbour)
    metrics["nearest_neighbour"] = {k: float(v.mean()) for k, v in neighbour.items()}
    metrics["nearest_neighbour"]["relative_purity"] = float(
        neighbour["nn_midpoint_purity"].sum() / max(arrays["purity"].sum(), 1e-12)
    )
    result = ModelResult(
        run.name,
        label,
        run.config.training.seed,
        cfg.model.variational,
        metrics,
        arrays,
        z_all,
        {},
        checkpoint=run.best_checkpoint,
    )
    _interpolate(model, study, result, device, advance)
    _examples(model, study, result, device, advance)
    return result


def posterior_health(run: RunSummary, cfg, means: torch.Tensor, logvars: torch.Tensor) -> dict:
    """``measures.posterior_health`` of a VAE run's posteriors of the test layouts, the KL's share
    taken of the validation loss at the run's best epoch."""
    total = float(run.best_row["val_total"]) if "val_total" in run.best_row else math.nan
    return m.posterior_health(means, logvars, cfg.loss.kld, cfg.data.resolution**2, total)


def noise_robustness(
    decode,
    z_all: torch.Tensor,
    partners: np.ndarray,
    channel_std: torch.Tensor,
    sigmas: tuple[float, ...],
    seed: int,
    chunk: int,
    device,
    advance: Advance = _unseen,
) -> dict[str, np.ndarray]:
    """Per image i, with ``decode`` a latent -> RGB decoder and n noise of std sigma x each
    channel's std (the same draws for every run: one generator per sigma, same seeds, same
    latent shape and chunks):

    - ``change_sigma<s>``: ``c_i = MSE(D(z_i + n), D(z_i))``, how far the noise moves the decoding
      (from the clean decoding, not the input: a decoder worse without noise gains nothing);
    - ``decoded_spread``: ``d_i = MSE(D(z_i), D(z_j(i)))``, the decoded distance to its partner
      layout ``j(i) = partners[i]``, the scale of the decoder's own output differences;
    - ``noise_relative_sigma<s>``: ``c_i / (c_i + d_i)``, the change on that scale
      (``measures.relative_change``).

    Decodes ``chunk`` latents (and their partners) at a time, telling ``advance(1)`` after each chunk."""
    generators = {sigma: torch.Generator().manual_seed(seed * 1000 + k) for k, sigma in enumerate(sigmas)}
    change: dict[float, list[torch.Tensor]] = {sigma: [] for sigma in sigmas}
    spread = []
    for part in _chunks(len(z_all), chunk, advance):
        z = z_all[part].to(device)
        clean = decode(z)
        spread.append(m.mse_per_image(decode(z_all[partners[part]].to(device)), clean).cpu())
        for sigma, generator in generators.items():
            change[sigma].append(m.mse_per_image(decode(m.perturb(z, sigma, channel_std, generator)), clean).cpu())
    d = torch.cat(spread).double()
    found = {"decoded_spread": d.numpy()}
    for sigma, values in change.items():
        c = torch.cat(values).double()
        found[f"change_sigma{sigma:g}"] = c.numpy()
        found[f"noise_relative_sigma{sigma:g}"] = m.relative_change(c, d).numpy()
    return found


def _nearest_neighbour_midpoints(
    model, study: Study, z_val: torch.Tensor, device, advance: Advance = _unseen
) -> dict[str, np.ndarray]:
    """For each test latent, the midpoint to its nearest training latent (among ``neighbour_pool``
    drawn), decoded: is the space between a layout and its closest known neighbour still a layout?"""
    s = study.settings
    train = study.data.train
    pool_positions = np.random.default_rng(s.seed).permutation(len(train))[: s.neighbour_pool]
    pool_positions = pool_positions[np.argsort(train.indices[pool_positions])]
    pool = torch.cat([model.encode(x).cpu() for x, _, _ in _batches(study, train, pool_positions, device, advance)])
    nearest = m.nearest(z_val, pool)
    purity, confidence, real = [], [], []
    for part in _chunks(len(z_val), study.chunk, advance):
        mid = 0.5 * (z_val[part] + pool[nearest[part]])
        out = model.decode(mid.to(device))
        purity.append(m.palette_purity(out["rgb"]).cpu())
        confidence.append(m.segmentation_confidence(out["segmentation"]).cpu())
        if study.scorer is not None:
            real.append(torch.from_numpy(study.scorer.on_manifold(to_uint8(out["rgb"]))))
    found = {
        "nn_midpoint_purity": torch.cat(purity).double().numpy(),
        "nn_midpoint_confidence": torch.cat(confidence).double().numpy(),
    }
    if real:
        found["nn_midpoint_realism"] = torch.cat(real).double().numpy()
    return found


def _interpolate(model, study: Study, result: ModelResult, device, advance: Advance = _unseen) -> None:
    """The same straight path, between the same pairs, for every run; the frames decoded a chunk
    at a time (``measures.PathTrace``), only their small copies for the explorer kept."""
    s = study.settings
    alphas = torch.tensor(study.alphas)
    pairs_out = []
    for pair in study.pairs:
        x = study.pair_images(pair, device)
        z = model.encode(x)
        trace, small, realism = m.PathTrace(), [], []
        for part in _chunks(len(alphas), study.chunk, advance):
            out = model.decode(m.lerp(z[0], z[1], alphas[part]))
            trace.add(out["rgb"], out["segmentation"])
            small.append(_frames_uint8(out["rgb"], s.frame_size))
            if study.scorer is not None:
                realism.append(study.scorer.on_manifold(to_uint8(out["rgb"])))
            del out
        validity = trace.validity()
        if realism:  # the share of inner frames the scorer takes for real layouts
            validity["mean_realism"] = float(np.concatenate(realism)[1:-1].mean())
        pairs_out.append({"pair": pair.label, "kind": pair.kind, **validity, "path_length_ratio": trace.length_ratio()})
        result.frames[pair.label] = np.concatenate(small)
        if pair.label not in study.pair_inputs:
            study.pair_inputs[pair.label] = _frames_uint8(x, s.frame_size)
    summary = {"path": "linear", "pairs": pairs_out, **_mean_over_pairs(pairs_out)}
    for kind in PAIR_KINDS:
        of_kind = [p for p in pairs_out if p["kind"] == kind]
        if of_kind:
            summary[kind] = _mean_over_pairs(of_kind)
    result.metrics["interpolation"] = summary


def _mean_over_pairs(pairs: list[dict]) -> dict:
    keys = (
        "validity",
        "relative_purity",
        "gradualness",
        "mean_purity",
        "min_purity",
        "mean_confidence",
        "mean_realism",
        "path_length_ratio",
    )
    return {f"pairs_{k}": float(np.mean([p[k] for p in pairs])) for k in keys if pairs and k in pairs[0]}


def _examples(model, study: Study, result: ModelResult, device, advance: Advance = _unseen) -> None:
    layouts = study.layouts
    # in the cache's row order, the order of one batch of them all (``study.inputs``)
    positions = study.example_positions[np.argsort(layouts.indices[study.example_positions], kind="stable")]
    rgb, segmentation = [], []
    for part in _chunks(len(positions), study.chunk, advance):
        x, _, _ = to_model_inputs(layouts[positions[part]], device)
        out = model.decode(model.encode(x))
        rgb.append(to_uint8(out["rgb"]))
        segmentation.append(class_to_rgb(out["segmentation"].argmax(1)))
    result.examples = {"rgb": np.concatenate(rgb), "segmentation": np.concatenate(segmentation)}


def run_study(
    arms: dict[str, list[RunSummary]],
    output_root: str | Path,
    settings: AnalysisSettings | None = None,
    log=print,
    *,
    write: bool = True,
) -> Study:
    """Measure every run of every arm (``arms``: label -> its runs, in the study file's order); with
    ``write`` (the analysis job), write latent_metrics.json and per_image.csv (explored in a
    notebook, nothing of the study is written)."""
    settings = settings or AnalysisSettings()
    device = resolve_device(settings.device, "analysis device")
    meter = StageMeter(device)
    runs = [run for label in arms for run in arms[label]]
    cfg = shared_config(runs, output_root)
    with meter("data"):
        data = load_data(cfg, log)
    val = data.evaluation
    positions, example_positions = choose_layouts(val, settings)
    study = Study(
        settings=settings,
        data=data,
        positions=positions,
        scene_ids=np.array([val.cache.records[row].scene_id for row in val.indices[positions]]),
        groups=val.groups[positions],
        pairs=choose_pairs(val, positions, settings.pairs_per_kind, settings.seed),
        example_positions=example_positions,
        inputs=val[example_positions]["rgb"].numpy(),
        pair_inputs={},
        models=[],
        alphas=[float(a) for a in np.linspace(0.0, 1.0, settings.steps)],
    )
    study.chunk = chunk_size(settings, cfg.data.resolution)
    study.partners = noise_partners(_layout_identities(val, positions, study.chunk), settings.seed)
    if settings.scorer:
        # the probe's seed: the same reference, so the feature network comes from the scorer cache
        with meter("scorer"):
            study.scorer, _, _ = study_scorer(data, cfg.outputs, PROBE_DEFAULTS.seed, device, log)
    for label, arm_runs in arms.items():
        for run in arm_runs:
            log(
                f"measuring {run.name} ({label}, seed {run.config.training.seed}) on {len(positions)} "
                f"{EVALUATION_SPLIT} layouts of {len(np.unique(study.scene_ids))} scenes ({device})"
            )
            # a bar in Jupyter; in a batch log four lines a run
            bar = progress_bar(work_chunks(study), f"measuring {run.name}", updates=4)
            with meter("measuring"):
                study.models.append(measure_model(run, label, study, device, bar.update))
            bar.close()
    study.resources = meter.resources()  # what it cost, recorded beside what it measured
    if write:
        path = study.latent_metrics().write(cfg.outputs.latent_metrics)
        write_text_atomic(cfg.outputs.per_image, study.per_image_table().to_csv(index=False))
        log(f"latent-space measurements written to {cfg.outputs.shown(path)} and per_image.csv beside it")
    return study
