"""Measure V1 and V2 side by side on the same validation layouts and write
``OUTPUT_ROOT/<phase>/analysis/latent_metrics.json``.

One pass per model over a fixed validation subset collects reconstruction quality (all, rooms,
scenes), blur, latents and posterior statistics; a second pass decodes noisy latents; then fixed
pairs of layouts are interpolated. The same subset, pairs and noise are used for both models.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config, config_from_dict
from ..data.batches import CachedLayouts, LayoutData, load_data, to_model_inputs
from ..files import write_text_atomic
from ..images import to_uint8
from ..metrics import confusion, miou, pixel_accuracy, psnr_per_image
from ..palette import class_to_rgb
from ..runtime import resolve_device
from ..training.checkpoints import load_model
from ..training.samples import pick_samples
from . import measures as m
from .runs import RunSummary

PAIR_KINDS = ("room-room", "scene-scene", "room-scene")
# What must agree between two runs for their comparison to be fair.
SAME_DATA_KEYS = ("data.manifest", "data.resolution", "data.synthetic_samples", "data.synthetic_seed",
                  "data.val_fraction", "data.split_seed", "data.drop_empty")


@dataclass
class AnalysisSettings:
    max_images: int = 512  # validation layouts measured: a random subset drawn from ``seed`` (all if fewer)
    batch_size: int = 16
    pairs_per_kind: int = 2  # K pairs each of room-room, scene-scene, room-scene
    steps: int = 11  # T points on each path, alpha = 0, 0.1, ..., 1
    sigmas: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
    seed: int = 0
    min_active_fraction: float = 0.5  # below this share of active channels = posterior collapse
    frame_size: int = 128  # pixels of the explorer's frames
    device: str = "auto"


@dataclass
class Pair:
    kind: str
    a: int  # positions in the validation split
    b: int
    a_path: str = ""
    b_path: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}: {Path(self.a_path).stem} -> {Path(self.b_path).stem}"


@dataclass
class ModelResult:
    name: str
    label: str
    variational: bool
    metrics: dict  # what goes into latent_metrics.json
    latents: torch.Tensor  # (N, C, h, w) validation latents (posterior means), CPU
    examples: dict[str, np.ndarray]  # "rgb" / "segmentation": (E, H, W, 3) uint8
    frames: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # path -> pair label -> (T, h, w, 3)


@dataclass
class Study:
    settings: AnalysisSettings
    data: LayoutData
    positions: np.ndarray  # measured validation positions
    pairs: list[Pair]
    example_positions: np.ndarray
    inputs: np.ndarray  # (E, H, W, 3) uint8 of the examples
    pair_inputs: dict[str, np.ndarray]  # pair label -> (2, h, w, 3)
    models: list[ModelResult]
    alphas: list[float]

    def pair_images(self, pair: Pair, device: torch.device) -> torch.Tensor:
        """The pair's two layouts as model inputs, A first."""
        x, _, _ = to_model_inputs(self.data.val[np.array([pair.a, pair.b])], device)
        # a dataset batch comes back sorted by cache row; keep the pair's own order
        return x.flip(0) if self.data.val.indices[pair.a] > self.data.val.indices[pair.b] else x

    def to_json(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "validation_images": int(len(self.positions)),
            "pairs": [asdict(p) | {"label": p.label} for p in self.pairs],
            "alphas": self.alphas,
            "models": {r.name: r.metrics for r in self.models},
        }


def shared_config(runs: list[RunSummary], output_root: str | Path) -> Config:
    """The data configuration both runs trained on (refuses runs trained on different data)."""
    base = runs[0].config
    for run in runs[1:]:
        differ = [k for k in SAME_DATA_KEYS if run.config.get(k) != base.get(k)]
        if differ:
            detail = ", ".join(f"{k}: {base.get(k)!r} vs {run.config.get(k)!r}" for k in differ)
            raise ValueError(f"{runs[0].name} and {run.name} were trained on different data ({detail}); "
                             "they cannot be compared on one validation set")
    return config_from_dict(base.to_dict(), {"output_root": str(output_root), "data.num_workers": 0})


def choose_pairs(layouts: CachedLayouts, positions: np.ndarray, per_kind: int, seed: int) -> list[Pair]:
    """K fixed pairs of each kind among the measured layouts (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    types = layouts.types[positions]
    rooms, scenes = positions[types == 0], positions[types == 1]
    pools = {"room-room": (rooms, rooms), "scene-scene": (scenes, scenes), "room-scene": (rooms, scenes)}
    pairs = []
    for kind in PAIR_KINDS:
        left, right = pools[kind]
        for _ in range(per_kind):
            if len(left) == 0 or len(right) == 0 or (left is right and len(left) < 2):
                break
            a = int(rng.choice(left))
            b = int(rng.choice(right[right != a]))
            paths = layouts.cache.records
            pairs.append(Pair(kind, a, b, str(paths[layouts.indices[a]].path), str(paths[layouts.indices[b]].path)))
    return pairs


def _frames_uint8(images: torch.Tensor, size: int) -> np.ndarray:
    if images.shape[-1] > size:
        images = F.interpolate(images.float(), size=(size, size), mode="area")
    return to_uint8(images)


def _summarise(per_image: dict[str, torch.Tensor], types: torch.Tensor, matrices: dict[str, torch.Tensor]) -> dict:
    out = {}
    for subset, mask in (("all", torch.ones_like(types, dtype=torch.bool)), ("room", types == 0), ("scene", types == 1)):
        if not bool(mask.any()):
            continue
        sel = {k: v[mask].double() for k, v in per_image.items()}
        out[subset] = {
            "images": int(mask.sum()),
            "mse": float(sel["mse"].mean()),
            "psnr": float(sel["psnr"].mean()),
            "ssim": float(sel["ssim"].mean()),
            "miou": miou(matrices[subset]),
            "pixel_accuracy": pixel_accuracy(matrices[subset]),
            "classification_accuracy": float(sel["correct"].mean()),
            "sharpness_ratio": float(sel["sharp_out"].sum() / sel["sharp_in"].sum().clamp_min(1e-12)),
            "palette_purity": float(sel["purity_out"].mean()),
            "input_palette_purity": float(sel["purity_in"].mean()),
        }
    return out


@torch.no_grad()
def measure_model(run: RunSummary, study: Study, device: torch.device) -> ModelResult:
    s = study.settings
    cfg, model, _ = load_model(run.best_checkpoint, device)
    val = study.data.val
    per_image: dict[str, list[torch.Tensor]] = {k: [] for k in
                                                ("mse", "psnr", "ssim", "correct", "sharp_in", "sharp_out",
                                                 "purity_in", "purity_out")}
    matrices = {k: torch.zeros(10, 10, dtype=torch.int64) for k in ("all", "room", "scene")}
    latents, logvars, labels = [], [], []
    for start in range(0, len(study.positions), s.batch_size):
        x, class_map, label = to_model_inputs(val[study.positions[start:start + s.batch_size]], device)
        posterior = model.posterior(x)
        z = posterior.mode()
        out = model.decode(z)
        latents.append(z.cpu())
        labels.append(label.cpu())
        if not posterior.deterministic:
            logvars.append(posterior.logvar.cpu())
        per_image["mse"].append(m.mse_per_image(out["rgb"], x).cpu())
        per_image["psnr"].append(psnr_per_image(out["rgb"], x).cpu())
        per_image["ssim"].append(m.ssim_per_image(out["rgb"], x).cpu())
        per_image["correct"].append((out["classification"].argmax(1) == label).float().cpu())
        sharp_out, sharp_in = m.edge_energy(out["rgb"], x)
        per_image["sharp_in"].append(sharp_in.cpu())
        per_image["sharp_out"].append(sharp_out.cpu())
        per_image["purity_in"].append(m.palette_purity(x).cpu())
        per_image["purity_out"].append(m.palette_purity(out["rgb"]).cpu())
        prediction = out["segmentation"].argmax(1)
        for subset, mask in (("all", label >= 0), ("room", label == 0), ("scene", label == 1)):
            if bool(mask.any()):
                matrices[subset] += confusion(prediction[mask], class_map[mask]).cpu()
    stacked = {k: torch.cat(v) for k, v in per_image.items()}
    types = torch.cat(labels)
    z_all = torch.cat(latents)
    metrics: dict = {
        "experiment": run.name,
        "variational": cfg.model.variational,
        "reconstruction": _summarise(stacked, types, matrices),
        "latent": m.latent_statistics(z_all),
        "channel_activity": m.channel_activity(z_all).tolist(),
    }
    if cfg.model.variational:
        metrics["posterior"] = m.posterior_health(z_all, torch.cat(logvars), cfg.loss.kld, s.min_active_fraction)
    metrics["noise"] = _noise_robustness(model, study, z_all, metrics["latent"]["std"], device)
    result = ModelResult(run.name, run.label, cfg.model.variational, metrics, z_all, {})
    _interpolate(model, study, result, device)
    _examples(model, study, result, device)
    return result


def _noise_robustness(model, study: Study, z_all: torch.Tensor, latent_std: float, device) -> dict:
    """Reconstruction MSE of ``decode(z + sigma * eps * std(z))`` against the input, per sigma;
    the same eps for every model (same generator seeds, same latent shape)."""
    s = study.settings
    # One generator per sigma, each drawing batch after batch in order; the inputs read once per batch.
    generators = [torch.Generator().manual_seed(s.seed * 1000 + k) for k in range(len(s.sigmas))]
    errors: list[list[torch.Tensor]] = [[] for _ in s.sigmas]
    for start in range(0, len(study.positions), s.batch_size):
        x, _, _ = to_model_inputs(study.data.val[study.positions[start:start + s.batch_size]], device)
        z = z_all[start:start + s.batch_size].to(device)
        for sigma, generator, out in zip(s.sigmas, generators, errors):
            noisy = m.add_latent_noise(z, sigma, latent_std, generator)
            out.append(m.mse_per_image(model.decode(noisy)["rgb"], x).cpu())
    mse = [float(torch.cat(out).double().mean()) for out in errors]
    return {"sigmas": list(s.sigmas), "mse": mse, "relative_to_clean": [v / mse[0] if mse[0] > 0 else math.inf for v in mse]}


def _interpolate(model, study: Study, result: ModelResult, device) -> None:
    s = study.settings
    alphas = torch.tensor(study.alphas)
    paths = {"linear": m.lerp} | ({"spherical": m.slerp} if result.variational else {})
    summary: dict = {}
    for path_name, path in paths.items():
        pairs_out = []
        result.frames[path_name] = {}
        for pair in study.pairs:
            x = study.pair_images(pair, device)
            z = model.encode(x)
            out = model.decode(path(z[0], z[1], alphas))
            smooth = m.path_smoothness(out["rgb"])
            mid = len(study.alphas) // 2
            pairs_out.append({
                "pair": pair.label,
                "kind": pair.kind,
                **{k: v for k, v in smooth.items() if k != "steps"},
                "step_sizes": smooth["steps"],
                "midpoint_palette_purity": float(m.palette_purity(out["rgb"][mid:mid + 1])[0]),
                "midpoint_segmentation_confidence": float(m.segmentation_confidence(out["segmentation"][mid:mid + 1])[0]),
            })
            result.frames[path_name][pair.label] = _frames_uint8(out["rgb"], s.frame_size)
            if pair.label not in study.pair_inputs:
                study.pair_inputs[pair.label] = _frames_uint8(x, s.frame_size)
        summary[path_name] = {"pairs": pairs_out, **_mean_over_pairs(pairs_out)}
        for kind in PAIR_KINDS:
            of_kind = [p for p in pairs_out if p["kind"] == kind]
            if of_kind:
                summary[path_name][kind] = _mean_over_pairs(of_kind)
    result.metrics["interpolation"] = summary


def _mean_over_pairs(pairs: list[dict]) -> dict:
    keys = ("path_length_ratio", "max_step_share", "midpoint_palette_purity", "midpoint_segmentation_confidence")
    return {f"mean_{k}": float(np.mean([p[k] for p in pairs])) if pairs else math.nan for k in keys}


def _examples(model, study: Study, result: ModelResult, device) -> None:
    x, _, _ = to_model_inputs(study.data.val[study.example_positions], device)
    out = model.decode(model.encode(x))
    result.examples = {"rgb": to_uint8(out["rgb"]), "segmentation": class_to_rgb(out["segmentation"].argmax(1))}


def run_study(runs: list[RunSummary], output_root: str | Path, settings: AnalysisSettings | None = None,
              log=print) -> Study:
    """Measure every run on the same validation layouts, pairs and noise; write latent_metrics.json."""
    settings = settings or AnalysisSettings()
    cfg = shared_config(runs, output_root)
    data = load_data(cfg, log)
    val = data.val
    # A seeded random subset, not the first layouts: a manifest sorted by scene would otherwise
    # give a few houses' rooms.
    positions = np.sort(np.random.default_rng(settings.seed).permutation(len(val))[:settings.max_images])
    example_positions = np.sort(positions[pick_samples(CachedLayouts(val.cache, val.indices[positions]), per_type=3)])
    study = Study(
        settings=settings,
        data=data,
        positions=positions,
        pairs=choose_pairs(val, positions, settings.pairs_per_kind, settings.seed),
        example_positions=example_positions,
        inputs=val[example_positions]["rgb"].numpy(),
        pair_inputs={},
        models=[],
        alphas=[float(a) for a in np.linspace(0.0, 1.0, settings.steps)],
    )
    device = resolve_device(settings.device, "analysis device")
    for run in runs:
        log(f"measuring {run.name} on {len(positions)} validation layouts ({device})")
        study.models.append(measure_model(run, study, device))
    path = cfg.outputs.latent_metrics
    write_text_atomic(path, json.dumps(study.to_json(), indent=1, allow_nan=True))
    log(f"latent-space measurements written to {cfg.outputs.shown(path)}")
    return study
