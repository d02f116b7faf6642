"""The diffusion probe: how well a latent diffusion model learns each run's latent space, measured
by what it generates.

For every finished run: encode the training layouts once, standardise the latents per channel, train
the same denoiser (architecture, steps, batch, seed) on them, generate layouts from the same initial
noise, decode them with that run's decoder and score them with the layout scorer against the test
layouts (held out from training and from checkpoint choice). Then the same denoiser is trained on to
a second, longer budget and its layouts scored again; every generated set is also scored by the
feature networks of several seeds, so that neither the budget nor the scorer's own seed decides
unseen. Beside that: copies of training layouts among the generated ones (searched in every training
layout), the held-out denoising loss at fixed noise levels, the run's own reconstructions of test
layouts scored the same way by every scorer network, at as many layouts as it generated (the best
its decoder allows, so that a bad generation score can be told apart from a bad decoder, and
generations that score better than them, a collapse or a fooled scorer, are seen: ``guard``), and
the cheap diffusability measures. Everything lands in ``OUTPUT_ROOT/<phase>/probe/
probe_metrics.json``, with the seconds each phase took; a killed probe resumes where it stopped.

Decoded layouts are never all in memory: they are decoded, described (features, pixel
statistics, copy distances) and dropped a chunk at a time, so the probe's memory does not grow
with the number of samples.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...data.batches import EVALUATION_SPLIT, CachedLayouts, LayoutData, load_data, to_model_inputs
from ...files import atomic_path, file_sha256, write_text_atomic
from ...images import save_png, to_uint8
from ...model import LayoutAutoencoder
from ...outputs import Outputs
from ...runtime import StageMeter as Timings  # seconds and peak memory per phase
from ...runtime import device_name, peak_memory, resolve_device
from ...scoring import LayoutScorer
from ...scoring.copies import CopyDistances, CopyIndex, generated_class_maps
from ...scoring.features import Embedding
from ...scoring.inputs import ClassMapRows
from ...scoring.pixels import PixelStatistics, pixel_statistics
from ...training.checkpoints import load_model
from ..arms import is_sweep_run
from ..results import ProbeMetrics
from ..runs import RunSummary, load_runs, shared_config
from . import diffusability as d
from .denoiser import heldout_losses, precision, sample_latents, train_denoiser, unet_layout
from .guard import guard_scores, reconstruction_positions
from .latents import EncodedLayouts, Standardiser, encode_layouts
from .reference import study_scorers, training_copies
from .settings import ProbeSettings

# Validation layouts for the held-out loss, the diffusability measures and the copy threshold.
HELDOUT_LIMIT = 1024
MEASURE_LIMIT = 128  # images through the encoder for the equivariance and scale measures
GRID_SIDE = 4  # the sample grid: 4 x 4 generated layouts
DECODE_CHUNK = 64  # layouts decoded, described and dropped at a time: 50 MB of RGB at 512 x 512
# Pixels per encoder or decoder call: 8 layouts at 512 x 512. On a CPU the activations of one call
# are resident memory: 64 layouts decoded at once at 512 x 512 held 4.5 GB (bench --memory).
MODEL_PIXELS = 2**21


def model_batch(resolution: int) -> int:
    """Layouts per encoder or decoder call at ``resolution``: DECODE_CHUNK, at most MODEL_PIXELS
    pixels. The batch changes no result, only how much is held at once."""
    return max(1, min(DECODE_CHUNK, MODEL_PIXELS // resolution**2))


def run_probe(
    out: Outputs, names: list[str], settings: ProbeSettings, log: Callable[[str], None] = print
) -> ProbeMetrics:
    """Probe every run in ``names`` (they must have finished, on the same data); write and return
    ``probe_metrics.json``."""
    started = time.perf_counter()
    runs, _ = load_runs(out, names)
    cfg = shared_config(runs, out.root)
    data = load_data(cfg, log)
    device = resolve_device(settings.device, "probe device")
    timings = Timings(device)
    with timings("scorers"):
        scorers, held, rng = study_scorers(data, out, settings.seed, settings.scorer_seed_list, device, log)
    heldout_positions = np.sort(rng.permutation(len(data.evaluation))[:HELDOUT_LIMIT])
    heldout_layouts = CachedLayouts(data.evaluation.cache, data.evaluation.indices[heldout_positions])
    with timings("copy_index"):
        copies = training_copies(data, heldout_layouts, device, log)
    with timings("layouts"):
        save_png(out.probe_real_grid, _grid(held.subset(np.arange(min(GRID_SIDE**2, len(held.labels)))).rgb()))
        spectrum = _layout_spectrum(data.evaluation, heldout_positions, runs[0])
    metrics = {
        "settings": settings.to_json(),
        "device": device_name(device),
        "precision": precision(device),
        "data": {
            "train": len(data.train),
            "validation": len(data.val),
            "test": len(data.test),
            "evaluated_on": EVALUATION_SPLIT,
            "resolution": cfg.data.resolution,
            "scored_against": len(held.labels),
            "heldout_latents": len(heldout_positions),
        },
        "scorers": [scorer.about_features() for scorer in scorers],
        "layouts": spectrum,
        "experiments": {},
        "timings": {},
    }
    # the test layouts the scorers score against: a run's reconstructions are drawn outside them first
    reference = held.class_maps.positions if isinstance(held.class_maps, ClassMapRows) else None
    for run in runs:
        log(f"probing the latent space of {run.name} ({device})")
        result = probe_run(run, data, heldout_layouts, scorers, copies, settings, device, out, log, reference)
        metrics["experiments"][run.name] = result
        metrics["timings"] = {
            **timings,
            "runs": {name: r["timings"]["total"] for name, r in metrics["experiments"].items()},
            "total": time.perf_counter() - started,
            "peak_memory": peak_memory(device),
            "peak_memory_after": timings.peaks,  # the shared phases'; each run's beside its timings
        }
        ProbeMetrics(**metrics).write(out.probe_metrics)  # after each run: a killed probe keeps the runs done
    log(f"probe finished in {metrics['timings']['total']:.1f} s (shared: {timings.line()})")
    log(f"probe metrics written to {out.shown(out.probe_metrics)}")
    return ProbeMetrics(**metrics)


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
    heldout_layouts: CachedLayouts,
    scorers: list[LayoutScorer],
    copies: CopyIndex,
    settings: ProbeSettings,
    device: torch.device,
    out: Outputs,
    log: Callable[[str], None],
    reference: np.ndarray | None = None,
) -> dict:
    """One run's probe (see the module). ``reference``: positions in the test split of the layouts
    the scorers score against (a run's test reconstructions are drawn outside them first)."""
    started = time.perf_counter()
    timings = Timings(device)
    _, model, _ = load_model(run.best_checkpoint, device)
    batch = model_batch(run.config.data.resolution)
    with timings("encoding"):
        train_latents = encode_layouts(model, data.train, device, batch_size=batch)
        heldout = encode_layouts(model, heldout_layouts, device, batch_size=batch)
        standardiser = Standardiser.fit(train_latents)
    # The held-out latents as the denoiser would see them, the same draw for every latent space.
    heldout_z = standardiser.apply(
        heldout.draw(torch.arange(len(heldout)), torch.Generator().manual_seed(settings.seed))
    )

    seeds = [
        _probe_seed(run, train_latents, standardiser, heldout_z, settings, seed, device, out, log)
        for seed in settings.seed_list
    ]
    for steps in settings.budgets:
        timings.add(f"denoiser_training_{steps}", sum(s["budgets"][str(steps)]["training_seconds"] for s in seeds))
    timings.add("sampling", sum(b["sampling_seconds"] for s in seeds for b in s["budgets"].values()))
    timings.add("heldout_loss", sum(b["heldout_loss_seconds"] for s in seeds for b in s["budgets"].values()))

    budgets, generated, first_described = {}, None, None
    for steps in settings.budgets:
        latents = torch.cat(
            [torch.load(out.probe_generated(run.name, seed, steps), weights_only=True) for seed in settings.seed_list]
        )
        first = steps == settings.steps
        log(f"{run.name}: decoding and scoring {len(latents)} layouts generated after {steps} steps")
        described = describe_layouts(
            decoded_layouts(model, standardiser, latents, device, timings, batch),
            scorers,
            copies,
            device,
            timings,
            out.probe_grid(run.name) if first else None,
        )
        scored = _score_generated(described, scorers, copies, settings, device, timings, every_score=first)
        if first:
            first_described = described
            generated = {
                **scored.scores,
                "memorisation": scored.memorisation,
                "fld_by_scorer": scored.by_scorer,
                "fld_floor_by_scorer": scored.floors,
            }
        budgets[str(steps)] = {
            "fld": scored.fld["value"],
            "fld_ci95": scored.fld["ci95"],
            "fld_floor": scored.fld["floor"],
            "fld_by_scorer": scored.by_scorer,
            "heldout_loss": _mean_over_seeds([s["budgets"][str(steps)]["heldout_loss"] for s in seeds]),
            "exact_copy_share": scored.memorisation["exact_copy_share"],
            "near_copy_share": scored.memorisation["near_copy_share"],
            "training_seconds": sum(s["budgets"][str(steps)]["training_seconds"] for s in seeds),
        }
        log(f"{run.name} after {steps} steps: {scored.line()}")

    with timings("reconstructions"):
        positions, in_reference = reconstruction_positions(
            len(data.evaluation), reference, generated["n_generated"], settings.seed
        )
        described = describe_layouts(
            _reconstructions(model, data.evaluation, positions, device, batch), scorers, None, device
        )
        reconstructed_scores = scorers[0].score_embedded(
            described.embeddings[0], described.pixels, bootstrap=settings.bootstrap, seed=settings.seed
        )
        guard = guard_scores(first_described.embeddings, described.embeddings, scorers, settings.seed) | {
            "reconstructed_split": EVALUATION_SPLIT,
            "reconstructed_in_reference": in_reference,
        }
    log(f"{run.name}: generations against test reconstructions: {_guard_line(guard)}")
    with timings("diffusability"):
        diffusability = _diffusability(model, heldout, heldout_layouts, device, batch)
    # A resumed probe reports the phases done earlier as they were recorded; the total counts them too.
    earlier = [b for s in seeds for b in s["budgets"].values() if b.get("done_earlier")]
    timings["done_earlier"] = sum(
        b["training_seconds"] + b["sampling_seconds"] + b["heldout_loss_seconds"] for b in earlier
    )
    timings["total"] = time.perf_counter() - started + timings["done_earlier"]
    log(f"{run.name}: seconds per phase: {timings.line()}")
    last = str(settings.budgets[-1])
    return {
        "label": run.label,
        # which weights were probed: the analysis compares it with the run's best.pt (not file times)
        "checkpoint_sha256": file_sha256(run.best_checkpoint),
        "training_seed": run.config.training.seed,
        "kld": run.config.loss.kld,
        # a KL-sweep run, probed alike for the analysis's KL-weight curve; the probe's own tables
        # and headline numbers are of the comparison runs (plots.comparison_runs)
        "sweep": is_sweep_run(run.label, run.config.loss.kld),
        "variational": model.variational,
        "latent_shape": list(train_latents.shape),
        "denoiser_trained_on": (
            "a fresh posterior sample each time a layout is drawn"
            if model.variational
            else "the encoder's latent (deterministic)"
        ),
        "standardisation": standardiser.to_json(),
        "generated": generated,
        "budgets": budgets,
        "reconstructed": reconstructed_scores,
        "guard": guard,
        "heldout_loss": budgets[str(settings.steps)]["heldout_loss"],
        "loss_curve": seeds[0]["budgets"][last]["curve"],
        "seeds": seeds,
        "diffusability": diffusability,
        "timings": dict(timings),
        "peak_memory_after": timings.peaks,
        "encode_seconds": timings["encoding"],
    }


@dataclass
class _Scored:
    """One generated set's scores: the first scorer's (every score, or its FLD alone), each
    scorer seed's FLD and floor, the copies of training layouts."""

    fld: dict  # value, ci95, floor of the first scorer
    by_scorer: dict[str, float]
    floors: dict[str, float]
    memorisation: dict
    scores: dict | None  # every score of the first scorer, when asked for

    def line(self) -> str:
        by_scorer = ", ".join(f"{seed}: {value:.4g}" for seed, value in self.by_scorer.items())
        copies = self.memorisation
        return (
            f"FLD {self.fld['value']:.4g} (floor {self.fld['floor']:.4g}); by scorer seed {by_scorer}; copies of "
            f"training layouts: exact {copies['exact_copy_share']:.3f}, near {copies['near_copy_share']:.3f} "
            f"(held-out real layouts: {copies['heldout_near_copy_share']:.3f})"
        )


def _score_generated(
    described: _Described,
    scorers: list[LayoutScorer],
    copies: CopyIndex,
    settings: ProbeSettings,
    device: torch.device,
    timings: Timings,
    every_score: bool,
) -> _Scored:
    with timings("scoring"):
        scores = None
        if every_score:  # its FLD is the primary endpoint
            scores = scorers[0].score_embedded(
                described.embeddings[0], described.pixels, bootstrap=settings.bootstrap, seed=settings.seed
            )
            fld = {k: scores["scores"]["fld"][k] for k in ("value", "ci95", "floor")}
        else:
            fld = scorers[0].fld(described.embeddings[0], bootstrap=settings.bootstrap, seed=settings.seed)
        by_scorer, floors = {str(scorers[0].model.seed): fld["value"]}, {str(scorers[0].model.seed): fld["floor"]}
        for scorer, embedding in zip(scorers[1:], described.embeddings[1:]):
            other = scorer.fld(embedding, seed=settings.seed)
            by_scorer[str(scorer.model.seed)], floors[str(scorer.model.seed)] = other["value"], other["floor"]
    with timings("memorisation"):
        memorisation = copies.summary(described.copies(copies, device))
    return _Scored(fld, by_scorer, floors, memorisation, scores)


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
    """One probe seed: train (or resume) the denoiser to each budget in turn, measure it, generate;
    each budget's result is kept in the seed's folder, so a resubmitted probe skips what is done
    and a longer budget continues the denoiser of the shorter one."""
    results, trained = {}, 0.0
    for steps in settings.budgets:
        key = {
            **settings.training_key(),
            "steps": steps,
            "samples": settings.samples,
            "ddim_steps": settings.ddim_steps,
            "noise_levels": list(settings.noise_levels),
            "seed": seed,
        }
        result_path, generated_path = (
            out.probe_seed_result(run.name, seed, steps),
            out.probe_generated(run.name, seed, steps),
        )
        if result_path.is_file() and generated_path.is_file():
            result = json.loads(result_path.read_text())
            if result.get("key") == key:
                log(f"{run.name} seed {seed}, {steps} steps: done earlier ({out.shown(result_path)})")
                results[str(steps)], trained = {**result, "done_earlier": True}, result["training_seconds_total"]
                continue
        result_path.parent.mkdir(parents=True, exist_ok=True)
        log(
            f"{run.name} seed {seed}: training the denoiser to {steps} steps "
            f"(UNet {unet_layout(train_latents.shape[1], settings.width)['block_out_channels']})"
        )
        denoiser, state = train_denoiser(
            train_latents, standardiser, settings, seed, out.probe_checkpoint(run.name, seed), device, log, steps
        )
        started = time.perf_counter()
        generated = sample_latents(denoiser, settings.samples, train_latents.shape, settings.ddim_steps, seed)
        sampling_seconds = time.perf_counter() - started
        with atomic_path(generated_path) as tmp:
            torch.save(generated, tmp)
        started = time.perf_counter()
        losses = heldout_losses(denoiser, heldout_z, settings.noise_levels, seed)
        result = {
            "key": key,
            "seed": seed,
            "steps": state.step,
            "training_seconds": state.seconds - trained,  # this budget's steps only
            "training_seconds_total": state.seconds,
            "sampling_seconds": sampling_seconds,
            "heldout_loss_seconds": time.perf_counter() - started,
            "curve": state.curve,
            "heldout_loss": losses,
        }
        write_text_atomic(result_path, json.dumps(result, indent=1, allow_nan=True))
        results[str(steps)], trained = result, state.seconds
    return {"seed": seed, "budgets": results}


def _mean_over_seeds(values: list[dict[str, float]]) -> dict[str, float]:
    return {level: float(np.mean([v[level] for v in values])) for level in values[0]}


class _Described:
    """What the scores need of a set of layouts, gathered a chunk at a time."""

    def __init__(self, scorers: int) -> None:
        self.parts: list[list[Embedding]] = [[] for _ in range(scorers)]
        self.pixel_parts: list[PixelStatistics] = []
        self.copy_parts: list[tuple[np.ndarray, np.ndarray]] = []  # exact copy?, coarse grid

    @property
    def embeddings(self) -> list[Embedding]:
        return [Embedding.join(parts) for parts in self.parts]

    @property
    def pixels(self) -> PixelStatistics:
        return PixelStatistics.join(self.pixel_parts)

    def copies(self, index: CopyIndex, device: torch.device) -> CopyDistances:
        """Exact copies, and each layout's distance to its nearest training layout."""
        exact, modes = (np.concatenate(part) for part in zip(*self.copy_parts))
        return CopyDistances(exact, index.nearest(modes, device))


def describe_layouts(
    chunks: Iterator[np.ndarray],
    scorers: list[LayoutScorer],
    copies: CopyIndex | None,
    device: torch.device,
    timings: Timings | None = None,
    grid_path: Path | None = None,
) -> _Described:
    """Features (per scorer), pixel statistics and copy distances of layouts given a chunk of
    (n, R, R, 3) uint8 RGB at a time; each chunk is dropped once described. The first
    GRID_SIDE^2 layouts are saved as a grid at ``grid_path``."""
    described = _Described(len(scorers))
    timings = timings if timings is not None else Timings(device)
    for index, rgb in enumerate(chunks):
        if index == 0 and grid_path is not None:
            save_png(grid_path, _grid(rgb[: GRID_SIDE**2]))
        with timings("scoring"):
            described.pixel_parts.append(pixel_statistics(rgb))
            for parts, scorer in zip(described.parts, scorers):
                parts.append(scorer.embedding(rgb))
        if copies is not None:  # the nearest training layouts are searched for all of them at once, after
            with timings("memorisation"):
                described.copy_parts.append(copies.lookup(generated_class_maps(rgb)))
    return described


@torch.no_grad()
def decoded_layouts(
    model: LayoutAutoencoder,
    standardiser: Standardiser,
    latents: torch.Tensor,
    device: torch.device,
    timings: Timings | None = None,
    batch: int = DECODE_CHUNK,
) -> Iterator[np.ndarray]:
    """The layouts of standardised ``latents``, DECODE_CHUNK at a time, decoded ``batch`` at a time."""
    timings = timings if timings is not None else Timings(device)
    for start in range(0, len(latents), DECODE_CHUNK):
        with timings("decoding"):
            chunk = latents[start : start + DECODE_CHUNK]
            rgb = np.concatenate(
                [
                    to_uint8(model.decode(standardiser.invert(chunk[b : b + batch].to(device)))["rgb"])
                    for b in range(0, len(chunk), batch)
                ]
            )
        yield rgb


def _guard_line(guard: dict) -> str:
    return f"{guard['n_layouts']} layouts each; " + ", ".join(
        f"scorer seed {seed}: FLD {s['generated_fld']:.4g} vs {s['reconstructed_fld']:.4g}, coverage "
        f"{s['generated_coverage']:.3f} vs {s['reconstructed_coverage']:.3f} (real {s['coverage_floor']:.3f})"
        for seed, s in guard["by_scorer"].items()
    )


@torch.no_grad()
def _reconstructions(
    model: LayoutAutoencoder, layouts: CachedLayouts, positions: np.ndarray, device: torch.device, batch: int
) -> Iterator[np.ndarray]:
    """Reconstructions (through the posterior mean) of the layouts at ``positions`` (distinct, in
    order), DECODE_CHUNK at a time, ``batch`` per model call."""
    for start in range(0, len(positions), DECODE_CHUNK):
        chunk = positions[start : start + DECODE_CHUNK]
        parts = []
        for b in range(0, len(chunk), batch):
            rgb, _, _ = to_model_inputs(layouts[chunk[b : b + batch]], device)
            parts.append(to_uint8(model.decode(model.encode(rgb))["rgb"]))
        yield np.concatenate(parts)


@torch.no_grad()
def _diffusability(
    model: LayoutAutoencoder, heldout: EncodedLayouts, layouts: CachedLayouts, device: torch.device, batch: int
) -> dict:
    measures = {"high_frequency": {"mean": _high_frequency(heldout.mean)}}
    if heldout.std is not None:
        generator = torch.Generator().manual_seed(0)
        measures["high_frequency"]["samples"] = _high_frequency(heldout.draw(torch.arange(len(heldout)), generator))
    rgb, _, _ = to_model_inputs(layouts[np.arange(min(MEASURE_LIMIT, len(layouts)))], device)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return model.posterior(x).mean

    measures["equivariance"] = d.equivariance_errors(encode, rgb, batch_size=batch)
    measures["scale_consistency"] = d.scale_consistency(encode, model.decode, rgb, batch_size=batch)
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
