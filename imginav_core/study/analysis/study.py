"""Measure every run of both arms (V1: deterministic, V2: VAE; one run per training seed) on the
same test layouts and write ``OUTPUT_ROOT/<phase>/analysis/latent_metrics.json`` and
``per_image.csv``.

Per run, one pass over a seeded random subset of the test layouts (never seen by training, checkpoint
choice or early stopping) collects reconstruction
quality (all, rooms, scenes), blur, latents and the posterior; then latent noise on each
channel's own scale, decoded and compared with the clean decoding and with the decoding of a
fixed partner layout; then the midpoint between each test latent and its nearest training
latent; then fixed pairs of layouts interpolated on the same straight path for every run.
Layouts, pairs, partners and noise are the same for every run, so the arms can be compared image
by image (``decision.py``).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ...data.batches import EVALUATION_SPLIT, CachedLayouts, LayoutData, load_data, to_model_inputs
from ...files import write_text_atomic
from ...images import to_uint8
from ...metrics import confusion, miou, pixel_accuracy, psnr_per_image
from ...palette import CLASS_NAMES, NUM_CLASSES, class_map_hash, class_to_rgb
from ...runtime import StageMeter, resolve_device
from ...scoring import LayoutScorer
from ...training.checkpoints import load_model
from ...training.progress import progress_bar
from ...training.samples import pick_samples
from ..arms import study_arms
from ..probe.reference import study_scorer
from ..probe.settings import DEFAULTS as PROBE_DEFAULTS
from ..results import LatentMetrics
from ..runs import RunSummary, shared_config
from . import measures as m
from .settings import AnalysisSettings

PAIR_KINDS = ("room-room", "scene-scene", "room-scene")
# The classes a blurry decoder loses first: small objects of a few pixels.
SMALL_CLASSES = ("chair", "lighting", "pier/stool")


@dataclass
class Pair:
    kind: str
    a: int  # positions in the evaluation (test) split
    b: int
    a_path: str = ""
    b_path: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}: {Path(self.a_path).stem} -> {Path(self.b_path).stem}"


@dataclass
class ModelResult:
    name: str
    label: str  # the arm, V1 or V2
    seed: int  # the run's training seed
    variational: bool
    metrics: dict  # what goes into latent_metrics.json
    per_image: dict[str, np.ndarray]  # measure -> (N,) over the study's positions (or (N, K))
    latents: torch.Tensor  # (N, C, h, w) test latents (posterior means), CPU
    examples: dict[str, np.ndarray]  # "rgb" / "segmentation": (E, H, W, 3) uint8
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # pair label -> (T, h, w, 3)
    checkpoint: Path | None = None  # the weights measured (the live explorer decodes with them)


@dataclass
class Study:
    settings: AnalysisSettings
    data: LayoutData
    positions: np.ndarray  # measured positions in the evaluation split, in the order of the cache's rows
    scene_ids: np.ndarray  # the scene of each measured layout
    # the group of each measured layout (its scene joined with identical layouts): the bootstrap's clusters
    groups: np.ndarray
    pairs: list[Pair]
    example_positions: np.ndarray
    inputs: np.ndarray  # (E, H, W, 3) uint8 of the examples
    pair_inputs: dict[str, np.ndarray]  # pair label -> (2, h, w, 3)
    models: list[ModelResult]
    alphas: list[float]
    scorer: LayoutScorer | None = None  # whether a layout looks real, from the probe's scorer
    # For each measured layout, a different measured layout (index into ``positions``): the
    # decoded distance between them scales the latent-noise measure. None: not measured.
    partners: np.ndarray | None = None
    chunk: int = 16  # layouts (or frames) per model call: settings.batch_size capped by settings.chunk_pixels
    # The split every measure is taken on: test, never seen by training, checkpoint choice or early stopping.
    evaluation_split: str = EVALUATION_SPLIT
    resources: dict = field(default_factory=dict)  # run_study's seconds and peak memory (StageMeter)

    @property
    def layouts(self) -> CachedLayouts:
        """The evaluation split's layouts (``positions`` index them)."""
        return getattr(self.data, self.evaluation_split)

    @property
    def labels(self) -> list[str]:
        """The arms measured, in the study file's order (a label that is no arm of it after them)."""
        measured = {r.label for r in self.models}
        order = [label for label in study_arms() if label in measured]
        return order + sorted(measured - set(order))

    def arm(self, label: str) -> list[ModelResult]:
        """The runs of one arm, in seed order."""
        return sorted((r for r in self.models if r.label == label), key=lambda r: r.seed)

    def shown(self, label: str) -> ModelResult:
        """The run of an arm whose pictures the report shows: its first seed."""
        return self.arm(label)[0]

    def pair_images(self, pair: Pair, device: torch.device) -> torch.Tensor:
        """The pair's two layouts as model inputs, A first."""
        x, _, _ = to_model_inputs(self.layouts[np.array([pair.a, pair.b])], device)
        # a dataset batch comes back sorted by cache row; keep the pair's own order
        return x.flip(0) if self.layouts.indices[pair.a] > self.layouts.indices[pair.b] else x

    def latent_metrics(self) -> LatentMetrics:
        """What ``latent_metrics.json`` holds (``LatentMetrics.write``)."""
        return LatentMetrics(
            settings=asdict(self.settings),
            evaluation_split=self.evaluation_split,
            evaluation_images=int(len(self.positions)),
            evaluation_scenes=int(len(np.unique(self.scene_ids))),
            evaluation_groups=int(len(np.unique(self.groups))),
            split=self.data.split_summary(),  # the sides' sizes and what the split did with identical layouts
            arms={label: [r.name for r in self.arm(label)] for label in self.labels},
            pairs=[asdict(p) | {"label": p.label} for p in self.pairs],
            alphas=self.alphas,
            models={r.name: r.metrics for r in self.models},
            resources=self.resources,
        )

    def per_image_table(self) -> pd.DataFrame:
        """Every run's per-image measures, one row per (run, layout): ``per_image.csv``."""
        records = self.layouts.cache.records
        rows = self.layouts.indices[self.positions]
        tables = []
        for r in self.models:
            table = pd.DataFrame(
                {
                    "run": r.name,
                    "arm": r.label,
                    "seed": r.seed,
                    "position": self.positions,
                    "layout_path": [str(records[i].path) for i in rows],
                    "scene_id": self.scene_ids,
                    "group": self.groups,
                    "type": self.layouts.types[self.positions],
                }
            )
            for key, values in r.per_image.items():
                if values.ndim == 1:
                    table[key] = values
                else:
                    for k, name in enumerate(SMALL_CLASSES):
                        table[f"{key}_{name.replace('/', '_')}"] = values[:, k]
            tables.append(table)
        return pd.concat(tables, ignore_index=True)


def choose_pairs(layouts: CachedLayouts, positions: np.ndarray, per_kind: int, seed: int) -> list[Pair]:
    """K fixed pairs of each kind among the measured layouts (deterministic per seed), no pair twice
    (in either order): a repeated pair would count as two in the per-pair intervals. Fewer than K
    of a kind when the measured layouts do not hold K different pairs."""
    rng = np.random.default_rng(seed)
    types = layouts.types[positions]
    rooms, scenes = np.sort(positions[types == 0]), np.sort(positions[types == 1])
    pools = {"room-room": (rooms, rooms), "scene-scene": (scenes, scenes), "room-scene": (rooms, scenes)}
    paths = layouts.cache.records
    pairs, chosen = [], set()
    for kind in PAIR_KINDS:
        left, right = pools[kind]
        if len(left) == 0 or len(right) == 0 or (left is right and len(left) < 2):
            continue
        # all different pairs when few, else random draws: either way at most per_kind, none repeated
        possible = len(left) * len(right) - (len(left) if left is right else 0)
        for _ in range(min(per_kind, possible // (2 if left is right else 1))):
            while True:
                a = int(rng.choice(left))
                b = int(rng.choice(right[right != a]))
                if frozenset((a, b)) not in chosen:
                    break
            chosen.add(frozenset((a, b)))
            pairs.append(Pair(kind, a, b, str(paths[layouts.indices[a]].path), str(paths[layouts.indices[b]].path)))
    return pairs


def _frames_uint8(images: torch.Tensor, size: int) -> np.ndarray:
    if images.shape[-1] > size:
        images = F.interpolate(images.float(), size=(size, size), mode="area")
    return to_uint8(images)


def _release_freed_memory() -> None:
    """Give the memory freed since the last call back to the operating system (glibc's
    ``malloc_trim``; elsewhere nothing). glibc keeps freed blocks of a few MB in its heap for
    reuse, and chunk after chunk of image-sized tensors of varying sizes fragments it: at 512 x 512
    the resident size grew by ~0.5 GB from 16 to 64 layouts measured, though nothing alive grew."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _glibc()


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


def chunk_size(settings: AnalysisSettings, resolution: int) -> int:
    """Layouts (or frames) per model call: ``batch_size``, and no more than ``chunk_pixels``
    pixels. Every model call and every image-sized measure works on one such chunk, so the
    memory is set by the chunk, not by the number of layouts, pairs, frames or noise levels."""
    return max(1, min(settings.batch_size, settings.chunk_pixels // resolution**2))


def noise_partners(identities: list[str], seed: int) -> np.ndarray:
    """For each layout i, a different layout j(i) (an index into ``identities``): the next one on
    a seeded random cycle through all of them, skipping layouts identical to i (equal
    ``identities``, the class-map hashes: the same layout under another scene decodes alike and
    would measure no distance). i itself only when every layout is identical to it. The same
    layouts and seed give the same pairing, so every run is measured on the same pairs."""
    n = len(identities)
    order = np.random.default_rng((seed, 2)).permutation(n)
    partners = np.arange(n)
    for k, i in enumerate(order):
        for step in range(1, n):
            j = order[(k + step) % n]
            if identities[j] != identities[i]:
                partners[i] = j
                break
    return partners


def _layout_identities(layouts: CachedLayouts, positions: np.ndarray, chunk: int) -> list[str]:
    """The class-map hash of each layout at ``positions`` (in the cache's row order)."""
    hashes = []
    for part in _chunks(len(positions), chunk):
        hashes += [class_map_hash(c) for c in layouts[positions[part]]["class_map"].numpy()]
    return hashes


def _small_class_counts(prediction: torch.Tensor, class_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and small class: intersection and union pixel counts, (N, K) each."""
    inter, union = [], []
    for name in SMALL_CLASSES:
        c = CLASS_NAMES.index(name)
        pred, true = prediction == c, class_map == c
        inter.append((pred & true).flatten(1).sum(1))
        union.append((pred | true).flatten(1).sum(1))
    return torch.stack(inter, 1).double(), torch.stack(union, 1).double()


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


@torch.no_grad()
def measure_model(
    run: RunSummary, label: str, study: Study, device: torch.device, advance: Advance = _unseen
) -> ModelResult:
    """Every measure of one run; ``advance(1)`` after each of its ``work_chunks(study)`` chunks."""
    s = study.settings
    cfg, model, _ = load_model(run.best_checkpoint, device)
    layouts = study.layouts
    per_image: dict[str, list] = defaultdict(list)
    matrices = {k: torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64) for k in ("all", "room", "scene")}
    means, logvars, seen = [], [], []
    # What a diffusion model trained on this space would see: the VAE's posterior samples.
    sampling = torch.Generator().manual_seed(s.seed)
    for x, class_map, label_ in _batches(study, layouts, study.positions, device, advance):
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
        for key, values in reconstruction_per_image(out["rgb"], x).items():
            per_image[key].append(values.cpu())
        per_image["correct"].append((out["classification"].argmax(1) == label_).float().cpu())
        prediction = out["segmentation"].argmax(1)
        inter, union = _small_class_counts(prediction, class_map)
        per_image["small_inter"].append(inter.cpu())
        per_image["small_union"].append(union.cpu())
        for subset, mask in (("all", label_ >= 0), ("room", label_ == 0), ("scene", label_ == 1)):
            if bool(mask.any()):
                matrices[subset] += confusion(prediction[mask], class_map[mask]).cpu()
        del out, posterior, x
    arrays = {k: torch.cat(v).double().numpy() for k, v in per_image.items()}
    types = layouts.types[study.positions]
    z_all, z_seen = torch.cat(means), torch.cat(seen)
    metrics: dict = {
        "experiment": run.name,
        "arm": label,
        "seed": run.config.training.seed,
        "variational": cfg.model.variational,
        "reconstruction": _summarise(arrays, types, matrices),
        "latent": m.latent_statistics(z_seen) | {"of": "posterior samples" if cfg.model.variational else "latents"},
    }
    if cfg.model.variational:
        total = float(run.best_row["val_total"]) if "val_total" in run.best_row else math.nan
        metrics["posterior"] = m.posterior_health(
            z_all, torch.cat(logvars), cfg.loss.kld, cfg.data.resolution**2, total
        )
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

    - ``change_sigma<s>``: ``c_i = MSE(D(z_i + n), D(z_i))``, how far the noise moves the decoding;
    - ``decoded_spread``: ``d_i = MSE(D(z_i), D(z_j(i)))``, the decoded distance to its partner
      layout ``j(i) = partners[i]``, the scale of the decoder's own output differences;
    - ``noise_relative_sigma<s>``: ``c_i / (c_i + d_i)`` (``measures.relative_change``): the
      change on that scale, so that a decoder ignoring its latent, or one whose output is merely
      scaled down, does not pass for robust.

    Decodes ``chunk`` latents (and their partners) at a time, telling ``advance(1)`` after each chunk."""
    generators = {sigma: torch.Generator().manual_seed(seed * 1000 + k) for k, sigma in enumerate(sigmas)}
    change: dict[float, list[torch.Tensor]] = {sigma: [] for sigma in sigmas}
    spread = []
    for part in _chunks(len(z_all), chunk, advance):
        z = z_all[part].to(device)
        clean = decode(z)
        spread.append(m.mse_per_image(decode(z_all[partners[part]].to(device)), clean).cpu())
        for sigma, generator in generators.items():
            change[sigma].append(m.decoded_change(clean, decode(m.perturb(z, sigma, channel_std, generator))).cpu())
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
    """For each test latent, the midpoint to its nearest training latent, decoded: is the
    space between a layout and its closest known neighbour still a layout?"""
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
    """Measure every run of every arm (``arms``: label -> its runs, in the study file's order) on the
    same test layouts, pairs and noise; with ``write`` (the analysis job), write latent_metrics.json
    and per_image.csv (explored in a notebook, nothing of the study is written)."""
    settings = settings or AnalysisSettings()
    device = resolve_device(settings.device, "analysis device")
    meter = StageMeter(device)
    runs = [run for label in arms for run in arms[label]]
    cfg = shared_config(runs, output_root)
    with meter("data"):
        data = load_data(cfg, log)
    val = data.evaluation
    # A seeded random subset, not the first layouts: a manifest sorted by scene would otherwise
    # give a few houses' rooms. Kept in the cache's row order, the order batches come back in.
    positions = np.random.default_rng(settings.seed).permutation(len(val))[: settings.max_images]
    positions = positions[np.argsort(val.indices[positions])]
    example_positions = np.sort(positions[pick_samples(CachedLayouts(val.cache, val.indices[positions]), per_type=3)])
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
    study.resources = meter.resources()
    if write:
        path = study.latent_metrics().write(cfg.outputs.latent_metrics)
        write_text_atomic(cfg.outputs.per_image, study.per_image_table().to_csv(index=False))
        log(f"latent-space measurements written to {cfg.outputs.shown(path)} and per_image.csv beside it")
    return study
