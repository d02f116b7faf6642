"""Batches from the decoded cache, and the one place a configuration becomes data.

A batch is gathered from the memory-mapped arrays with one fancy index per array (no per-image
Python work): the class maps, and the exact RGB of the few layouts with off-palette pixels. The
training loader hands that over as uint8 tensors (pinned when the model is on a GPU); the RGB
images are rebuilt from the class maps by a palette lookup and converted to float only on the
device (``to_model_inputs``), where it is cheap. ``layouts[positions]`` gives the same batch with
its RGB images rebuilt on the CPU, for code that reads images rather than trains on them.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import Config
from ..errors import LayoutReadError
from ..palette import class_to_rgb
from .cache import LayoutCache, build_cache
from .manifest import Manifest, read_manifest, split_records
from .synthetic import generate_layouts

# The RGB colour of each class index (256 entries; IGNORE_INDEX and the unused ones black): a
# palette-pure layout's image is this table looked up at its class map.
_COLOURS = class_to_rgb(np.arange(256))
_COLOURS_ON: dict[torch.device, torch.Tensor] = {}


def rgb_from_class_maps(class_map: torch.Tensor, off_rows: torch.Tensor, off_rgb: torch.Tensor) -> torch.Tensor:
    """(B, R, R, 3) uint8 RGB images on ``class_map``'s device: the palette colours of the class
    maps, with the rows ``off_rows`` (positions in the batch) replaced by their exact RGB ``off_rgb``
    (layouts with off-palette pixels, which the class map does not hold)."""
    if class_map.device.type == "cpu":  # numpy gathers at uint8 indices: no int64 copy of the maps
        rgb = torch.from_numpy(_COLOURS[class_map.numpy()])
    else:
        colours = _COLOURS_ON.get(class_map.device)
        if colours is None:
            colours = _COLOURS_ON.setdefault(class_map.device, torch.from_numpy(_COLOURS).to(class_map.device))
        rgb = colours[class_map.long()]
    if len(off_rows):
        rgb[off_rows] = off_rgb.to(rgb.device)
    return rgb


class LayoutBatch(dict):
    """A batch of ``CachedLayouts.stored`` whose ``"rgb"`` images are rebuilt from the class maps
    (on the CPU) when first asked for: code that reads only the class maps never pays for them,
    and ``to_model_inputs`` rebuilds them on its device instead."""

    def __missing__(self, key: str) -> torch.Tensor:
        if key != "rgb":
            raise KeyError(key)
        rgb = self["rgb"] = rgb_from_class_maps(self["class_map"], self["off_palette_rows"], self["off_palette_rgb"])
        return rgb


class CachedLayouts(Dataset):
    """The layouts ``indices`` of a cache. ``dataset[positions]`` returns a whole batch."""

    def __init__(self, cache: LayoutCache, indices: np.ndarray):
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        self._arrays: tuple[np.memmap, np.ndarray] | None = None  # opened on first use

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def types(self) -> np.ndarray:
        return self.cache.labels[self.indices]

    @property
    def hashes(self) -> np.ndarray:
        """Each layout's ``palette.class_map_hash``: equal hashes, identical layouts."""
        return self.cache.hashes[self.indices]

    def stored(self, positions) -> dict[str, torch.Tensor]:
        """A batch as the cache holds it: ``class_map`` (B, R, R) and ``label`` (B,), and
        ``off_palette_rgb`` (K, R, R, 3), the exact RGB of the batch's rows ``off_palette_rows``
        (K,); every other image is its class map in palette colours (``rgb_from_class_maps``)."""
        if self._arrays is None:
            self._arrays = self.cache.arrays()
        class_map, exact = self._arrays
        # Sorted rows read the memory map front to back; order within a batch does not matter.
        rows = np.sort(self.indices[np.atleast_1d(np.asarray(positions))])
        slots = self.cache.rgb_slot[rows]
        off = np.flatnonzero(slots >= 0)
        return {
            "class_map": torch.from_numpy(np.ascontiguousarray(class_map[rows])),
            "label": torch.from_numpy(self.cache.labels[rows]),
            "off_palette_rows": torch.from_numpy(off),
            "off_palette_rgb": torch.from_numpy(np.ascontiguousarray(exact[slots[off]])),
        }

    def __getitem__(self, positions) -> LayoutBatch:
        """``rgb`` (B, R, R, 3) and ``class_map`` (B, R, R) uint8, ``label`` (B,) int64, on the CPU,
        rows in the cache's order (the stored batch, its ``rgb`` rebuilt when first read)."""
        return LayoutBatch(self.stored(positions))


class EpochBatches(Sampler):
    """Batches of positions, reshuffled per epoch from ``(seed, epoch)`` alone, so a run resumed
    at an epoch boundary sees exactly the batches an uninterrupted run would.

    With ``world > 1`` each rank takes its share of every global batch: the global batch (and so
    the optimisation) is the same as in one process. ``lockstep`` (training) keeps the ranks
    stepping together, as DDP's gradient all-reduce needs: a last batch with fewer images than
    ranks is dropped. Without it (evaluation) every image is seen once; a rank whose share of
    the last batch is empty skips it.
    """

    def __init__(
        self, size: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1, lockstep: bool = True
    ):
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world, self.lockstep = rank, world, lockstep
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        if rest == 0:
            return full
        return full + (rest >= self.world if self.lockstep else self.rank < rest)

    def __iter__(self) -> Iterator[np.ndarray]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
            if self.shuffle
            else np.arange(self.size)
        )
        for start in range(0, self.size, self.batch_size):
            batch = order[start : start + self.batch_size]
            if self.lockstep and len(batch) < self.world:
                return
            share = batch[self.rank :: self.world]
            if len(share):
                yield share


def to_model_inputs(
    batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rgb float in [-1, 1] as NCHW, class_map int64, label int64) on ``device``, from a batch
    with its ``rgb`` images (``layouts[positions]``) or as stored (``layouts.stored``), whose
    images are rebuilt on the device."""
    class_map = batch["class_map"].to(device, non_blocking=True)
    if "rgb" in batch:
        rgb = batch["rgb"].to(device, non_blocking=True)
    else:
        off_rows = batch["off_palette_rows"].to(device, non_blocking=True)
        rgb = rgb_from_class_maps(class_map, off_rows, batch["off_palette_rgb"].to(device, non_blocking=True))
    rgb = rgb.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    rgb = rgb.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    class_map = class_map.long()
    label = batch["label"].to(device, non_blocking=True)
    return rgb, class_map, label


@dataclass
class LayoutData:
    manifest: Manifest
    cache: LayoutCache
    train: CachedLayouts
    val: CachedLayouts

    def split_csv(self) -> str:
        """The split as CSV text, ``layout_path, scene_id, type, split`` (paths as the manifest
        spells them, relative to its folder): what each run trained and validated on."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(("layout_path", "scene_id", "type", "split"))
        folder = self.manifest.path.resolve().parent
        for side, layouts in (("train", self.train), ("val", self.val)):
            for row in layouts.indices:
                record = self.cache.records[row]
                writer.writerow(
                    (Path(os.path.relpath(record.path, folder)).as_posix(), record.scene_id, record.type, side)
                )
        return text.getvalue()

    def summary(self, root: str | Path | None = None, shown: int = 20) -> str:
        """What was read, with what a user must see: the rows skipped and the off-palette pixels.
        Paths under ``root`` (the output root) are shown relative to it."""
        lines = [f"{self.manifest.summary(root)}; train {len(self.train)}, validation {len(self.val)}"]
        skipped = self.manifest.skipped + self.cache.skipped
        if skipped:
            lines.append(f"{len(skipped)} broken rows skipped (data.skip_broken: true):")
            lines += [f"  {message}" for message in skipped[:shown]]
            if len(skipped) > shown:
                lines.append(f"  ... and {len(skipped) - shown} more")
        lines.append(self.cache.off_palette_summary(root=root))
        return "\n".join(lines)


def manifest_path(cfg: Config, log=print) -> Path:
    """The configured manifest, or the synthetic set (generated on first use)."""
    if cfg.data.manifest:
        return Path(cfg.data.manifest)
    folder = cfg.outputs.synthetic_set(cfg.data.synthetic_samples, cfg.data.resolution, cfg.data.synthetic_seed)
    if not (folder / "layouts.csv").is_file():
        log(
            f"generating {cfg.data.synthetic_samples} synthetic layouts at {cfg.data.resolution}px in "
            f"{cfg.outputs.shown(folder)}"
        )
    return generate_layouts(folder, cfg.data.synthetic_samples, cfg.data.resolution, cfg.data.synthetic_seed)


def load_data(cfg: Config, log=print) -> LayoutData:
    """Manifest (or synthetic set) -> decoded cache -> deterministic train/validation split."""
    path = manifest_path(cfg, log)
    manifest = read_manifest(path, drop_empty=cfg.data.drop_empty, skip_broken=cfg.data.skip_broken)
    cache = build_cache(
        manifest.records, cfg.data.resolution, cfg.cache_root, path, skip_broken=cfg.data.skip_broken, log=log
    )
    if cache.skipped and not cfg.data.skip_broken:
        raise LayoutReadError(
            f"{cache.skipped[0]} (the cache at {cache.folder} was built with data.skip_broken: true and "
            f"left out {len(cache.skipped)} images; set data.skip_broken: true to train without them)"
        )
    # Split the manifest, not the cache, so skipping a broken image never moves another image
    # from one side of the split to the other.
    train_records, val_records = split_records(manifest.records, cfg.data.val_fraction, cfg.data.split_seed)
    position = {r.path: i for i, r in enumerate(cache.records)}
    train = CachedLayouts(cache, np.array([position[r.path] for r in train_records if r.path in position]))
    val = CachedLayouts(cache, np.array([position[r.path] for r in val_records if r.path in position]))
    if len(train) == 0 or len(val) == 0:
        raise LayoutReadError(
            f"{path}: no readable layouts left in the {'training' if len(train) == 0 else 'validation'} split"
        )
    return LayoutData(manifest, cache, train, val)


class BatchLoader:
    """Batches of a cached dataset in the order of an ``EpochBatches`` sampler.

    With ``workers`` > 0, that many background threads gather batches ahead of the training loop
    (numpy copies out of the memory map release the GIL), into pinned memory when the model is on
    a GPU, so the copy to the device can overlap the previous step. Threads, not worker processes:
    a process hands each batch over through shared memory and then a pinning thread, two extra
    copies of every batch that made the data path slower than the GPU's training step.
    """

    def __init__(self, dataset: CachedLayouts, sampler: EpochBatches, workers: int, pin_memory: bool):
        self.dataset, self.sampler, self.workers, self.pin_memory = dataset, sampler, workers, pin_memory

    def __len__(self) -> int:
        return len(self.sampler)

    def _load(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        batch = self.dataset.stored(positions)  # images are rebuilt from class maps on the device
        return {k: v.pin_memory() for k, v in batch.items()} if self.pin_memory else batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        positions = iter(self.sampler)
        if self.workers == 0:
            yield from map(self._load, positions)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="imginav-batches") as pool:
            ahead = deque(pool.submit(self._load, p) for p in itertools.islice(positions, 2 * self.workers + 2))
            while ahead:
                batch = ahead.popleft().result()
                following = next(positions, None)
                if following is not None:
                    ahead.append(pool.submit(self._load, following))
                yield batch


def batch_loader(
    dataset: CachedLayouts,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int,
    pin_memory: bool,
    rank: int = 0,
    world: int = 1,
    lockstep: bool = True,
) -> BatchLoader:
    """Whole batches of ``dataset``; ``batch_size`` is the global batch, split over ``world`` ranks."""
    sampler = EpochBatches(len(dataset), batch_size, shuffle, seed, rank, world, lockstep)
    return BatchLoader(dataset, sampler, num_workers, pin_memory)
