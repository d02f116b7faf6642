"""The layout scorer fitted on a study's own split: the training layouts to fit its feature network,
the validation layouts to score against. The probe and the analysis draw the same reference from
the same seed, so the feature network is trained once and found in the scorer cache after."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..data.batches import CachedLayouts, LayoutData
from ..outputs import Outputs
from ..scoring import LayoutScorer, ReferenceSet

# The scorer's reference sets are capped: at 512 x 512 every class map is 256 KiB.
REFERENCE_LIMIT = 4000


def reference_set(layouts: CachedLayouts, rng: np.random.Generator, what: str) -> ReferenceSet:
    positions = np.sort(rng.permutation(len(layouts))[:REFERENCE_LIMIT])
    positions = positions[np.argsort(layouts.indices[positions], kind="stable")]  # the cache's row order
    rows = layouts.indices[positions]
    # Class maps only, a slice at a time: a batch also holds the RGB, 3 GB for 4000 layouts at 512 x 512.
    slices = range(0, len(positions), 256)
    class_maps = [layouts[positions[i : i + 256]]["class_map"].numpy() for i in slices] or [
        layouts[positions]["class_map"].numpy()
    ]
    return ReferenceSet(
        np.concatenate(class_maps),
        layouts.cache.labels[rows],
        f"{len(positions)} layouts of the {what}",
        scene_ids=np.array([layouts.cache.records[row].scene_id for row in rows]),
    )


def study_scorer(
    data: LayoutData, out: Outputs, seed: int, device: torch.device, log: Callable[[str], None]
) -> tuple[LayoutScorer, ReferenceSet, np.random.Generator]:
    """The scorer, its held reference, and the generator it was drawn from (the probe draws its
    held-out latents from it next)."""
    rng = np.random.default_rng(seed)
    fit = reference_set(data.train, rng, "training split")
    held = reference_set(data.val, rng, "validation split")
    scorer = LayoutScorer.fit(fit, held, cache_dir=out.scorer_cache, seed=seed, log=log, device=device)
    return scorer, held, rng
