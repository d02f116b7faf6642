"""The layout scores: how far a set of generated layouts is from real ones, with a floor for each.

``LayoutScorer.fit(fit, held)`` trains (or loads) the feature network on ``fit`` and embeds both
parts once; ``score(images)`` compares generated RGB layouts with ``held`` and reports, for every
score, its value, a 95 % bootstrap interval over the generated layouts, and its *floor*: the same
score for as many real ``fit`` layouts, i.e. what a perfect generator gets at this sample size
(FID-like scores are biased upwards at small samples, so 0 is not the target, the floor is).

Scores (``SCORE_KEYS``), all in the feature space of ``features.py`` unless said:

    fld                       Fréchet distance of the features (FID's formula; torchmetrics)
    kid                       kernel distance, unbiased MMD^2 with a cubic kernel (torchmetrics)
    precision, recall         Kynkäänniemi et al. 2019: k-NN balls of one set covering the other
    density, coverage         Naeem et al. 2020: the same balls, counted (density ~1 for real)
    palette_purity            share of pixels within PURITY_TOLERANCE of a palette colour
    class_frequency_distance  total variation between the per-class pixel shares (nearest palette
                              colour) of generated and held layouts, 0..1
    scene_share_distance      |share of scenes among the generated, by the network's room/scene
                              head (mean probability) - share of scenes among held layouts|
    speckle_rate              share of connected class regions smaller than R^2/1024 pixels
    memorisation              share of generated layouts closer to their nearest ``fit`` layout
                              than 95 % of held layouts are to theirs (real-vs-real: ~0.05); with
                              ``median_ratio``, median generated / median held nearest distance
                              (< 1: closer to the training layouts than new real layouts are)

The memorisation floor is measured leaving each floor layout's own group out of its neighbours
(a ``fit`` layout's nearest ``fit`` layout is otherwise itself, a room of its own scene or an
identical copy listed under another scene). A low memorisation means nothing on its own: layouts
unlike any real one are far from the ``fit`` layouts too; read it where the other scores are near
their floors.

The intervals resample the generated layouts (their features computed once): the percentile
interval moved to centre on the estimate (``bootstrap.bootstrap_ci``), since the Fréchet distance,
recall and coverage of a resample with repeats are biased; clipped to each score's range.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ..errors import ConfigError
from ..palette import PURITY_TOLERANCE
from .bootstrap import bootstrap_ci
from .features import Embedding, FeatureModel, embed, heldout_accuracy, load_or_train
from .inputs import ReferenceSet
from .pixels import PixelStatistics, pixel_statistics, speckle_max_pixels

SCORE_KEYS: tuple[str, ...] = (
    "fld",
    "kid",
    "precision",
    "recall",
    "density",
    "coverage",
    "palette_purity",
    "class_frequency_distance",
    "scene_share_distance",
    "speckle_rate",
    "memorisation",
)
# What each score can be, to clip its (re-centred) interval to: probabilities, distances, KID unbounded
RANGE = {
    "fld": (0, math.inf),
    "kid": (-math.inf, math.inf),
    "density": (0, math.inf),
    "memorisation_median_ratio": (0, math.inf),
}
BETTER = {
    "fld": "lower",
    "kid": "lower",
    "precision": "higher",
    "recall": "higher",
    "density": "higher",
    "coverage": "higher",
    "palette_purity": "higher",
    "class_frequency_distance": "lower",
    "scene_share_distance": "lower",
    "speckle_rate": "lower",
    "memorisation": "lower",
}
NEIGHBOURS = 5  # k of the k-NN balls (both papers' default)
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
KID_BOOTSTRAP_SUBSETS = 3  # per resample: the resamples already vary what the subsets would
MEMORISATION_QUANTILE = 0.05


class _Precomputed(nn.Module):
    """A feature extractor for torchmetrics that is given the features themselves: the network
    runs once per image, and the bootstrap only re-indexes its output."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@dataclass
class _Sample:
    """Everything the scores need about one set of layouts, per layout."""

    features: torch.Tensor  # (M, d) float64
    pixels: PixelStatistics
    scene_probability: np.ndarray  # (M,)
    nearest_fit: np.ndarray  # (M,) distance to the nearest fit layout (its own group left out for fit layouts)
    to_held: torch.Tensor  # (M, N) distances to the held layouts
    among: torch.Tensor  # (M, M) distances among the sample


def _distances(a: torch.Tensor, b: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """Euclidean distances, float32: the k-NN matrices of thousands of layouts are the memory."""
    a, b = a.float(), b.float()
    return torch.cat([torch.cdist(a[i : i + batch], b) for i in range(0, len(a), batch)])


def _nearest(
    a: torch.Tensor, b: torch.Tensor, groups: tuple[np.ndarray, np.ndarray] | None = None, batch: int = 1024
) -> np.ndarray:
    """Each row of ``a``'s distance to its nearest row of ``b``. ``groups`` = (group of each row of
    ``a``, group of each row of ``b``): rows of ``b`` in a row's own group do not count for it (a
    real layout's own group holds itself, its scene's other rooms and its identical copies: its
    nearest neighbour there says nothing about copying)."""
    out = []
    a, b = a.float(), b.float()
    own_b = None if groups is None else torch.as_tensor(groups[1])
    for start in range(0, len(a), batch):
        d = torch.cdist(a[start : start + batch], b)
        if groups is not None:
            own_a = torch.as_tensor(groups[0][start : start + batch])
            d[own_a[:, None] == own_b[None, :]] = math.inf
        out.append(d.amin(1))
    return torch.cat(out).numpy()


def _kth_radius(distances: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other item (``distances`` already has inf where
    an item meets itself)."""
    k = min(k, distances.shape[1] - 1)
    if k < 1:
        return torch.full((len(distances),), math.inf, dtype=distances.dtype)
    return distances.kthvalue(k, dim=1).values


def _check_parts(fit: ReferenceSet, held: ReferenceSet) -> None:
    if len(fit) < 2 or len(held) < 2:
        raise ConfigError(
            f"{len(fit)} fit and {len(held)} held-out layouts ({held.source}); the scores need at least 2 of each"
        )
    if fit.resolution != held.resolution:
        raise ConfigError(
            f"fit layouts are {fit.resolution} px, held ones {held.resolution} px: read both at one resolution"
        )


class LayoutScorer:
    """Scores generated layouts against real ones; see the module's docstring."""

    def __init__(self, model: FeatureModel, fit: ReferenceSet, held: ReferenceSet, log=print) -> None:
        _check_parts(fit, held)
        self.model = model
        self.net = model.net
        self.fit_set, self.held = fit, held
        self.resolution = fit.resolution
        start = time.perf_counter()
        self.fit_embedding = embed(self.net, fit.rgb_view())
        self.fit_groups = fit.groups()  # the memorisation floor leaves each layout's own group out
        held_embedding = embed(self.net, held.rgb_view())
        self.accuracy = heldout_accuracy(self.net, held, held_embedding)
        self.fit_features = torch.from_numpy(self.fit_embedding.features)
        self.held_features = torch.from_numpy(held_embedding.features)
        if "pixels" not in held.derived:  # the same for every feature network: computed once
            held.derived["pixels"] = pixel_statistics(held.rgb_view())
        self.held_shares = held.derived["pixels"].shares.mean(0)
        self.held_scene_share = float(np.mean(held.labels == 1))
        # the held layouts' own k-NN balls (precision, density, coverage)
        among = _distances(self.held_features, self.held_features)
        among.fill_diagonal_(math.inf)
        self.k = max(1, min(NEIGHBOURS, len(held) - 1))
        self.held_radii = _kth_radius(among, self.k)
        # real-vs-real memorisation: how near held layouts come to the fit ones
        held_nearest_fit = _nearest(self.held_features, self.fit_features)
        self.memorisation_threshold = float(np.quantile(held_nearest_fit, MEMORISATION_QUANTILE))
        self.held_median_nearest = float(np.median(held_nearest_fit))
        # FID holding the held features, given one sample's features after another
        self._fid = FrechetInceptionDistance(feature=_Precomputed(self.num_features), reset_real_features=False)
        self._fid.update(self.held_features, real=True)
        self._floors: dict[tuple[int, int], dict[str, float]] = {}  # (sample size, seed): the floor, scored once
        log(
            f"reference embedded in {time.perf_counter() - start:.1f} s: {len(fit)} fit, {len(held)} held layouts; "
            f"feature net held-out room/scene accuracy {self.accuracy['room_scene']:.3f}, "
            f"presence accuracy {self.accuracy['presence']:.3f}, area-share MAE {self.accuracy['area_share_mae']:.4f}"
        )

    @classmethod
    def fit(
        cls,
        fit: ReferenceSet,
        held: ReferenceSet,
        *,
        cache_dir: Path | None = None,
        seed: int = 0,
        log=print,
        device: str | torch.device = "cpu",
    ) -> LayoutScorer:
        """Train (or load from ``cache_dir``) the feature network on ``fit``; embed both parts."""
        _check_parts(fit, held)
        return cls(load_or_train(fit, held, cache_dir, seed, device, log), fit, held, log)

    @property
    def num_features(self) -> int:
        return self.net.num_features

    def embedding(self, rgb) -> Embedding:
        """What the feature network says about (M, R, R, 3) uint8 RGB layouts (an array, or a
        tensor on any device: decoded layouts need not leave it), in their order."""
        rgb = rgb if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
        expected = (self.resolution, self.resolution, 3)
        if rgb.dtype not in (np.uint8, torch.uint8) or rgb.ndim != 4 or tuple(rgb.shape[1:]) != expected:
            raise ConfigError(
                f"layouts are {rgb.dtype} {tuple(rgb.shape)}; expected (M, {self.resolution}, "
                f"{self.resolution}, 3) uint8 RGB, the resolution the reference was read at"
            )
        return embed(self.net, rgb)

    def features(self, rgb) -> np.ndarray:
        """(M, num_features) float64 features of (M, R, R, 3) uint8 RGB layouts."""
        return self.embedding(rgb).features

    def on_manifold(self, rgb) -> np.ndarray:
        """Per layout, 1.0 if its features fall inside the k-NN ball of some held real layout, else
        0.0: the per-layout part of ``precision`` (Kynkäänniemi et al. 2019). Real layouts score
        about ``precision``'s floor; blurred or muddy ones fall outside."""
        return self._inside_held(torch.from_numpy(self.features(rgb))).any(1).double().numpy()

    def score(self, generated_rgb: np.ndarray, *, bootstrap: int = 200, seed: int = 0) -> dict:
        """Scores of (M, R, R, 3) uint8 RGB layouts against the held reference; JSON-ready."""
        rgb = np.asarray(generated_rgb)
        return self.score_embedded(self.embedding(rgb), pixel_statistics(rgb), bootstrap=bootstrap, seed=seed)

    def score_embedded(
        self, embedding: Embedding, pixels: PixelStatistics, *, bootstrap: int = 200, seed: int = 0
    ) -> dict:
        """``score`` of layouts already described: their ``embedding`` and ``pixel_statistics``,
        gathered a chunk at a time (so that thousands of 512 x 512 layouts need not be in memory at once)."""
        n = len(embedding)
        if n < 2:
            raise ConfigError(f"{n} generated layout(s); the distribution scores need at least 2")
        if len(pixels) != n:
            raise ValueError(f"pixel statistics of {len(pixels)} layouts for the embedding of {n}")
        generated = self._sample(pixels, embedding)
        floor = self._floor(n, seed)
        with torch.random.fork_rng(devices=[]):  # KID draws its subsets with torch's global generator
            torch.manual_seed(seed)
            values = self._statistics(generated, np.arange(n), self._kid(n, KID_SUBSETS))
            kid = self._kid(n, KID_BOOTSTRAP_SUBSETS)
            intervals = (
                bootstrap_ci(
                    lambda idx: list(self._statistics(generated, idx, kid).values()),
                    n,
                    resamples=bootstrap,
                    seed=seed,
                    estimate=list(values.values()),
                )
                if bootstrap > 0
                else np.full((len(values), 2), np.nan)
            )
        ci95 = {name: _pair(np.clip(interval, *RANGE.get(name, (0, 1)))) for name, interval in zip(values, intervals)}

        def entry(name: str) -> dict:
            return {"value": values[name], "ci95": ci95[name], "floor": floor[name]}

        scores = {name: entry(name) | {"better": BETTER[name]} for name in SCORE_KEYS}
        scores["memorisation"] |= {
            "median_ratio": entry("memorisation_median_ratio"),
            "quantile": MEMORISATION_QUANTILE,
            "threshold_distance": self.memorisation_threshold,
        }
        scores["kid"] |= {"subset_size": self._kid_size(n), "subsets": KID_SUBSETS}
        for name in ("precision", "recall", "density", "coverage"):
            scores[name]["k"] = self.k
        scores["palette_purity"]["tolerance"] = PURITY_TOLERANCE
        scores["speckle_rate"]["max_pixels"] = speckle_max_pixels(self.resolution)
        return _finite_or_none(
            {
                "n_generated": n,
                "n_reference": len(self.held),
                "n_floor": min(n, len(self.fit_set)),
                "resolution": self.resolution,
                "reference": self.held.source,
                "bootstrap": bootstrap,
                "seed": seed,
                "features": self.about_features(),
                "scores": scores,
            }
        )

    def about_features(self) -> dict:
        """The feature network, for the JSON: its seed, where it came from, how well it does."""
        return {
            "heldout_accuracy": self.accuracy,
            "num_features": self.num_features,
            "cache": self.model.cache,
            "fit_seconds": self.model.fit_seconds,
            "n_fit": len(self.fit_set),
            "seed": self.model.seed,
        }

    def fld(self, embedding: Embedding, *, bootstrap: int = 0, seed: int = 0) -> dict:
        """The Fréchet distance alone of layouts already embedded by this scorer, with its floor
        (the same fit layouts ``score`` draws) and, with ``bootstrap`` resamples, its 95 % interval."""
        if len(embedding) < 2:
            raise ConfigError(f"{len(embedding)} generated layout(s); the Fréchet distance needs at least 2")
        features = torch.from_numpy(embedding.features)
        value = self._frechet(features)
        interval = [math.nan, math.nan]
        if bootstrap > 0:
            interval = bootstrap_ci(
                lambda idx: self._frechet(features[torch.as_tensor(idx)]),
                len(features),
                resamples=bootstrap,
                seed=seed,
                estimate=value,
            )
        floor = self._frechet(self._floor_features(len(features), seed))
        return _finite_or_none({"value": value, "ci95": _pair(np.clip(interval, *RANGE["fld"])), "floor": floor})

    def fld_and_coverage(self, embedding: Embedding, *, seed: int = 0) -> dict:
        """The Fréchet distance and the coverage (Naeem et al. 2020: the share of held layouts whose
        k-NN ball holds one of these) of layouts already embedded by this scorer, each with its
        floor: the same for as many real fit layouts (those ``score`` draws from ``seed``). Cheap
        enough for every scorer network, where ``score`` is the first network's full set."""
        found = self.fld(embedding, seed=seed)
        coverage = self._inside_held(torch.from_numpy(embedding.features)).any(0).double().mean()
        floor = self._inside_held(self._floor_features(len(embedding), seed)).any(0).double().mean()
        return {
            "fld": found["value"],
            "fld_floor": found["floor"],
            "coverage": float(coverage),
            "coverage_floor": float(floor),
        }

    def _inside_held(self, features: torch.Tensor) -> torch.Tensor:
        """(M, N): whether each of ``features`` lies in each held layout's k-NN ball."""
        return _distances(features, self.held_features) <= self.held_radii

    def _frechet(self, features: torch.Tensor) -> float:
        self._fid.reset()
        self._fid.update(features, real=False)
        return float(self._fid.compute())

    def _kid_size(self, n: int) -> int:
        """KID's subset size for ``n`` generated layouts, the same for them and their floor."""
        return min(KID_SUBSET_SIZE, n, len(self.fit_set), len(self.held))

    def _kid(self, n: int, subsets: int) -> KernelInceptionDistance:
        """KID holding the held features, to be given a sample's features again and again."""
        with warnings.catch_warnings():  # that KID keeps every feature: here a few thousand x 64
            warnings.filterwarnings("ignore", "Metric `Kernel Inception Distance` will save")
            kid = KernelInceptionDistance(
                feature=_Precomputed(self.num_features),
                subsets=subsets,
                subset_size=self._kid_size(n),
                reset_real_features=False,
            )
        kid.update(self.held_features, real=True)
        return kid

    def _floor_index(self, n: int, seed: int) -> np.ndarray:
        """The floor's real layouts: as many fit layouts as ``n`` (all of them if fewer), drawn from ``seed``."""
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(len(self.fit_set), min(n, len(self.fit_set)), replace=False))

    def _floor_features(self, n: int, seed: int) -> torch.Tensor:
        return self.fit_features[torch.from_numpy(self._floor_index(n, seed))]

    def _floor(self, n: int, seed: int) -> dict[str, float]:
        """Every score of the floor sample for ``n`` generated layouts; it depends on the reference
        alone, so it is computed once per sample size and seed, whatever is scored against it."""
        if (n, seed) not in self._floors:
            index = self._floor_index(n, seed)
            pixels = pixel_statistics(self.fit_set.subset(index).rgb_view())
            floor = self._sample(pixels, self.fit_embedding.subset(index), index)
            with torch.random.fork_rng(devices=[]):  # KID draws its subsets with torch's global generator
                torch.manual_seed(seed)
                self._floors[(n, seed)] = self._statistics(floor, np.arange(len(index)), self._kid(n, KID_SUBSETS))
        return self._floors[(n, seed)]

    def _sample(self, pixels: PixelStatistics, embedding: Embedding, fit_index: np.ndarray | None = None) -> _Sample:
        features = torch.from_numpy(embedding.features)
        return _Sample(
            features,
            pixels,
            embedding.scene_probability,
            _nearest(
                features,
                self.fit_features,
                None if fit_index is None else (self.fit_groups[fit_index], self.fit_groups),
            ),
            _distances(features, self.held_features),
            _distances(features, features),
        )

    def _statistics(self, sample: _Sample, idx: np.ndarray, kid: KernelInceptionDistance) -> dict[str, float]:
        """Every score of the layouts ``sample[idx]`` (a bootstrap resample: repeats allowed)."""
        index = torch.as_tensor(idx)
        features = sample.features[index]
        kid.reset()
        kid.update(features, real=False)
        # k-NN balls among the sample itself; a repeat of an item is the item, not a neighbour
        among = sample.among[index][:, index].clone()
        among[index[:, None] == index[None, :]] = math.inf
        radii = _kth_radius(among, self.k)
        to_held = sample.to_held[index]
        inside_held = to_held <= self.held_radii  # (m, N): generated i in held j's ball
        pixels = sample.pixels
        shares = pixels.shares[idx].mean(0)
        nearest = sample.nearest_fit[idx]
        return {
            "fld": self._frechet(features),
            "kid": float(kid.compute()[0]),
            "precision": float(inside_held.any(1).double().mean()),
            "recall": float((to_held <= radii[:, None]).any(0).double().mean()),
            "density": float(inside_held.sum(1).double().mean() / self.k),
            "coverage": float(inside_held.any(0).double().mean()),
            "palette_purity": float(pixels.purity[idx].mean()),
            "class_frequency_distance": float(0.5 * np.abs(shares - self.held_shares).sum()),
            "scene_share_distance": float(abs(sample.scene_probability[idx].mean() - self.held_scene_share)),
            "speckle_rate": float(pixels.small_regions[idx].sum() / max(1, pixels.regions[idx].sum())),
            "memorisation": float(np.mean(nearest < self.memorisation_threshold)),
            "memorisation_median_ratio": float(np.median(nearest) / self.held_median_nearest)
            if self.held_median_nearest > 0
            else math.nan,
        }


def _pair(interval) -> list[float]:
    return [float(interval[0]), float(interval[1])]


def _finite_or_none(value):
    """NaN and infinities as None (JSON has neither; an interval without resamples is None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def format_scores(result: dict) -> str:
    """The scores as a table: value, 95 % interval, floor (a real sample's score), which way is better."""
    accuracy = result["features"]["heldout_accuracy"]
    lines = [
        f"{result['n_generated']} generated layouts vs {result['n_reference']} held-out real ones "
        f"({result.get('reference', 'reference')}), {result['resolution']} x {result['resolution']} px",
        f"feature net: {result['features']['num_features']} features, {result['features']['cache']}; held-out "
        f"room/scene accuracy {accuracy['room_scene']:.3f}, presence accuracy {accuracy['presence']:.3f}, "
        f"area-share MAE {accuracy['area_share_mae']:.4f}",
        f"floor: the same scores for {result.get('n_floor', result['n_generated'])} real layouts "
        "(what a perfect generator gets at this sample size)",
        "",
        f"{'score':<26} {'value':>10}  {'95% CI':<23} {'floor':>10}  better",
    ]

    def row(name: str, entry: dict) -> str:
        lo, hi = entry["ci95"]
        interval = "n/a" if lo is None or hi is None else f"[{lo:.4g}, {hi:.4g}]"
        return (
            f"{name:<26} {_number(entry['value']):>10}  {interval:<23} {_number(entry['floor']):>10}  "
            f"{entry.get('better', '')}"
        )

    for name, entry in result["scores"].items():
        lines.append(row(name, entry))
        if name == "memorisation":
            lines.append(row("  median distance ratio", {**entry["median_ratio"], "better": "(~1)"}))
    return "\n".join(lines)
