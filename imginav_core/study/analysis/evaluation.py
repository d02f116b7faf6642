"""What every run is measured on, chosen once for all of them, and the records of what it gave.

The test layouts (a seeded random subset of the evaluation split, never seen by training, checkpoint
choice or early stopping), the pairs interpolated between and each layout's noise partner are the
same for every run, so that the arms are compared image by image (``decision.py``). ``Study`` holds
them with every run's ``ModelResult`` (measured by ``study.run_study``), and gives what
``latent_metrics.json`` and ``per_image.csv`` hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...data.batches import EVALUATION_SPLIT, CachedLayouts, LayoutData, to_model_inputs
from ...scoring import LayoutScorer
from ...training.samples import pick_samples
from ..arms import study_arms
from ..results import LatentMetrics
from .measures import SMALL_CLASSES
from .settings import AnalysisSettings

PAIR_KINDS = ("room-room", "scene-scene", "room-scene")


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


def choose_layouts(layouts: CachedLayouts, settings: AnalysisSettings) -> tuple[np.ndarray, np.ndarray]:
    """(the positions measured, the examples shown among them: three of each type). A seeded random
    subset, not the first layouts: a manifest sorted by scene would otherwise give a few houses'
    rooms. Kept in the cache's row order, the order batches come back in."""
    positions = np.random.default_rng(settings.seed).permutation(len(layouts))[: settings.max_images]
    positions = positions[np.argsort(layouts.indices[positions])]
    examples = pick_samples(CachedLayouts(layouts.cache, layouts.indices[positions]), per_type=3)
    return positions, np.sort(positions[examples])


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


def chunk_size(settings: AnalysisSettings, resolution: int) -> int:
    """Layouts (or frames) per model call and image-sized measure: ``batch_size``, and no more than
    ``chunk_pixels`` pixels (the memory is the chunk's, ``study.py``)."""
    return max(1, min(settings.batch_size, settings.chunk_pixels // resolution**2))


def noise_partners(identities: list[str], seed: int) -> np.ndarray:
    """For each layout i, a different layout j(i) (an index into ``identities``): the next one on
    a seeded random cycle through all of them, skipping layouts identical to i (equal
    ``identities``, the class-map hashes: the same layout under another scene decodes alike and
    would measure no distance); i itself only when every layout is identical to it."""
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
