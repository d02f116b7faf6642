"""What the probe scores against, from a study's own split: the layout scorers (the training layouts
fit their feature networks, the test layouts are scored against) and the index of every
training layout that generated copies are looked up in.

The probe and the analysis draw the same reference from the same seed, so the first feature
network is trained once and found in the scorer cache after. The reference sets read their class
maps from the layout cache when needed instead of holding them (at 512 x 512, 4,000 class maps
are 1 GB).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ...data.batches import EVALUATION_SPLIT, CachedLayouts, LayoutData
from ...outputs import Outputs
from ...scoring import LayoutScorer, ReferenceSet
from ...scoring.copies import CopyDistances, CopyIndex, generated_class_maps, hashes_of
from ...scoring.inputs import ClassMapRows

# The scorer's reference sets are capped: the feature network's training and the k-NN matrices
# of the scores grow with them.
REFERENCE_LIMIT = 4000
CHUNK = 256  # layouts read at a time: 64 MB of class maps at 512 x 512


def class_map_reader(layouts: CachedLayouts) -> Callable[[np.ndarray], np.ndarray]:
    """Reads the class maps of ``layouts`` at positions, in the order asked for."""

    def read(positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        # A batch comes in the order of the cache's rows: ask in that order, put back in the order asked.
        order = np.argsort(layouts.indices[positions], kind="stable")
        batch = layouts[positions[order]]["class_map"].numpy()
        out = np.empty_like(batch)
        out[order] = batch
        return out

    return read


def reference_set(layouts: CachedLayouts, rng: np.random.Generator, what: str) -> ReferenceSet:
    """Up to REFERENCE_LIMIT layouts drawn from ``rng``, in the order of the cache's rows."""
    positions = rng.permutation(len(layouts))[:REFERENCE_LIMIT]
    positions = positions[np.argsort(layouts.indices[positions], kind="stable")]
    rows = layouts.indices[positions]
    return ReferenceSet(
        ClassMapRows(class_map_reader(layouts), positions, layouts.cache.resolution),
        layouts.cache.labels[rows],
        f"{len(positions)} layouts of the {what}",
        scene_ids=np.array([layouts.cache.records[row].scene_id for row in rows]),
    )


def study_scorers(
    data: LayoutData,
    out: Outputs,
    seed: int,
    scorer_seeds: list[int],
    device: torch.device,
    log: Callable[[str], None],
) -> tuple[list[LayoutScorer], ReferenceSet, np.random.Generator]:
    """One scorer per feature-network seed in ``scorer_seeds``, all on the same reference drawn
    from ``seed``; the held reference; and the generator it was drawn from (the probe draws its
    held-out latents from it next)."""
    rng = np.random.default_rng(seed)
    fit = reference_set(data.train, rng, "training split")
    held = reference_set(data.evaluation, rng, f"{EVALUATION_SPLIT} split")
    scorers = [
        LayoutScorer.fit(fit, held, cache_dir=out.scorer_cache, seed=net_seed, log=log, device=device)
        for net_seed in scorer_seeds
    ]
    return scorers, held, rng


def study_scorer(
    data: LayoutData, out: Outputs, seed: int, device: torch.device, log: Callable[[str], None]
) -> tuple[LayoutScorer, ReferenceSet, np.random.Generator]:
    """The scorer whose feature network has the reference's own seed (the analysis's), its held
    reference, and the generator they were drawn from."""
    scorers, held, rng = study_scorers(data, out, seed, [seed], device, log)
    return scorers[0], held, rng


def _chunks(layouts: CachedLayouts, with_palette_hashes: bool) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Every layout's class map, a chunk at a time (in the cache's row order), with the hashes
    that identify it: its class map's (as the cache keeps it); with ``with_palette_hashes``, for a layout with
    off-palette pixels (which its class map marks as no class) also the hash of its exact
    image read as nearest palette colours, which is how a generated copy of it is read."""
    for start in range(0, len(layouts), CHUNK):
        positions = np.arange(start, min(start + CHUNK, len(layouts)))
        # asked for in the order of the cache's rows, the batch comes in that order
        positions = positions[np.argsort(layouts.indices[positions], kind="stable")]
        rows = layouts.indices[positions]
        batch = layouts[positions]
        hashes = list(layouts.cache.hashes[rows])
        off = np.flatnonzero(layouts.cache.off_palette[rows] > 0)
        if with_palette_hashes and len(off):
            hashes += hashes_of(generated_class_maps(batch["rgb"].numpy()[off]))
        yield batch["class_map"].numpy(), hashes


def training_copies(
    data: LayoutData, heldout: CachedLayouts, device: torch.device, log: Callable[[str], None]
) -> CopyIndex:
    """Every training layout in the copy index, its threshold calibrated on ``heldout`` (real
    layouts no model trained on)."""
    index = CopyIndex.build(_chunks(data.train, with_palette_hashes=True), data.train.cache.resolution)
    parts = [index.describe(maps, hashes, device) for maps, hashes in _chunks(heldout, with_palette_hashes=False)]
    index.calibrate(CopyDistances.join(parts))
    log(
        f"copy index: {len(index)} training layouts on a {index.grid} x {index.grid} grid; near copies within "
        f"{index.threshold:.3f} of the cells (the {index.heldout['heldout_layouts']} held-out layouts' 5 % quantile)"
    )
    return index
