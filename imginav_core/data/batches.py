"""Batches from the decoded cache, and the one place a configuration becomes data.

A batch is read from the cache's files into fresh arrays, one positioned read (``os.preadv``) per
run of consecutive rows (no per-image Python work): the class maps, and the exact RGB of the few
layouts with off-palette pixels. The training loader hands that over as uint8 tensors (pinned when
the model is on a GPU); the RGB images are rebuilt from the class maps by a palette lookup and
converted to float only on the device (``to_model_inputs``), where it is cheap. ``layouts[positions]``
gives the same batch with its RGB images rebuilt on the CPU, for code that reads images rather than
trains on them.

Why not a memory map: rows copied out of a mapped file stay mapped, as file pages counted in the
process's resident size, until the kernel needs the memory back. At 512 x 512 that is 262 KB per
layout read: an epoch of training (~19,500 layouts) or the analysis (test layouts, its neighbour
pool and the scorer's reference class maps: ~3.5 GB) would look several GB larger to a batch
system that limits the resident size (LSF's -M), though nothing alive holds them. Read with
``preadv``, they are in the page cache, shared and reclaimable, and not in any process's resident
size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import Config
from ..errors import LayoutReadError
from ..files import csv_text
from ..images import from_uint8
from ..outputs import relative_path
from ..palette import COLOURS
from .cache import CLASS_MAPS, OFF_PALETTE_RGB, LayoutCache, build_cache
from .manifest import (
    SIDE_NAMES,
    SIDES,
    SPLIT_SCHEME,
    Manifest,
    SplitFigures,
    read_manifest,
    split_figures,
    split_records,
)
from .synthetic import generate_layouts

_COLOURS_ON: dict[torch.device, torch.Tensor] = {}  # palette.COLOURS on each device


def rgb_from_class_maps(class_map: torch.Tensor, off_rows: torch.Tensor, off_rgb: torch.Tensor) -> torch.Tensor:
    """(B, R, R, 3) uint8 RGB images on ``class_map``'s device: the palette colours of the class
    maps, with the rows ``off_rows`` (positions in the batch) replaced by their exact RGB ``off_rgb``
    (layouts with off-palette pixels, which the class map does not hold)."""
    if class_map.device.type == "cpu":  # numpy gathers at uint8 indices: no int64 copy of the maps
        rgb = torch.from_numpy(COLOURS[class_map.numpy()])
    else:
        colours = _COLOURS_ON.get(class_map.device)
        if colours is None:
            colours = _COLOURS_ON.setdefault(class_map.device, torch.tensor(COLOURS, device=class_map.device))
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


class RowFile:
    """A file of equal-sized uint8 rows, read a set of rows at a time into a fresh array.

    Each run of consecutive rows is one ``os.preadv`` straight into the array: no memory map, so
    nothing read stays in the process's resident size (the module's docstring says why), and no
    file offset shared between threads (the loader's threads read at once). Where ``preadv`` is
    missing (not Linux, BSD or macOS) the rows are copied out of a memory map instead.
    """

    def __init__(self, path: Path, rows: int, row_shape: tuple[int, ...]):
        self.path, self.rows, self.row_shape = path, rows, row_shape
        self.row_bytes = int(np.prod(row_shape))
        self._fd: int | None = None
        self._map: np.memmap | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            weakref.finalize(self, os.close, self._fd)  # closed when the reader is dropped
        return self._fd

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), *row_shape) uint8: the rows asked for, in the order asked (ascending rows
        read the file front to back)."""
        out = np.empty((len(rows), *self.row_shape), dtype=np.uint8)
        if len(rows) == 0:
            return out
        if not hasattr(os, "preadv"):
            if self._map is None:
                self._map = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.rows, *self.row_shape))
            out[:] = self._map[rows]
            return out
        fd, flat = self._open(), out.reshape(len(rows), self.row_bytes)
        # Runs of consecutive rows: where the next row is not this one + 1, a new read starts.
        starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
        for first, end in zip(starts, [*starts[1:], len(rows)]):
            self._read_into(fd, memoryview(flat[first:end]).cast("B"), int(rows[first]))
        return out

    def _read_into(self, fd: int, buffer: memoryview, row: int) -> None:
        done = 0
        while done < len(buffer):
            got = os.preadv(fd, [buffer[done:]], row * self.row_bytes + done)
            if got == 0:
                raise LayoutReadError(
                    f"{self.path}: ends before row {row + done // self.row_bytes} of {self.rows} rows of "
                    f"{self.row_bytes} bytes (a cache file cut short: delete its folder to have it rebuilt)"
                )
            done += got

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_map": None}  # a copy in another process opens its own


class CachedLayouts(Dataset):
    """The layouts ``indices`` of a cache. ``dataset[positions]`` returns a whole batch."""

    def __init__(self, cache: LayoutCache, indices: np.ndarray):
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        self._files: tuple[RowFile, RowFile] | None = None  # (class maps, exact RGB), opened on first use

    def _row_files(self) -> tuple[RowFile, RowFile]:
        if self._files is None:
            n, r = len(self.cache), self.cache.resolution
            folder = self.cache.folder
            self._files = (
                RowFile(folder / CLASS_MAPS, n, (r, r)),
                RowFile(folder / OFF_PALETTE_RGB, len(self.cache.rgb_rows), (r, r, 3)),
            )
        return self._files

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def types(self) -> np.ndarray:
        return self.cache.labels[self.indices]

    @property
    def groups(self) -> np.ndarray:
        """int64 group id per layout: its scene joined with every scene sharing an identical
        layout (the split's unit, and the cluster to resample when bootstrapping)."""
        return self.cache.groups[self.indices]

    @property
    def hashes(self) -> np.ndarray:
        """Each layout's ``palette.class_map_hash``: equal hashes, identical layouts."""
        return self.cache.hashes[self.indices]

    def stored(self, positions) -> dict[str, torch.Tensor]:
        """A batch as the cache holds it: ``class_map`` (B, R, R) and ``label`` (B,), and
        ``off_palette_rgb`` (K, R, R, 3), the exact RGB of the batch's rows ``off_palette_rows``
        (K,); every other image is its class map in palette colours (``rgb_from_class_maps``)."""
        class_maps, exact = self._row_files()
        # Sorted rows read the files front to back; order within a batch does not matter.
        rows = np.sort(self.indices[np.atleast_1d(np.asarray(positions))])
        slots = self.cache.rgb_slot[rows]
        off = np.flatnonzero(slots >= 0)
        return {
            "class_map": torch.from_numpy(class_maps.read(rows)),
            "label": torch.from_numpy(self.cache.labels[rows]),
            "off_palette_rows": torch.from_numpy(off),
            "off_palette_rgb": torch.from_numpy(exact.read(slots[off])),
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
    rgb = from_uint8(rgb).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    class_map = class_map.long()
    label = batch["label"].to(device, non_blocking=True)
    return rgb, class_map, label


# The split every comparison of runs is measured on (the analysis's measures, the probe's held-out
# latents and the scorer's reference): test, since validation chose each run's checkpoint and
# stopped its training, and measures on it would favour whichever run it happened to suit.
EVALUATION_SPLIT = "test"


@dataclass
class LayoutData:
    """The manifest, its decoded cache, and its split into ``train`` (what the model fits),
    ``val`` (per-epoch validation: best checkpoint, early stopping) and ``test`` (held out from
    both, for the measures that compare runs)."""

    manifest: Manifest
    cache: LayoutCache
    train: CachedLayouts
    val: CachedLayouts
    test: CachedLayouts
    figures: SplitFigures  # the split's sizes and what it did with identical layouts

    @property
    def evaluation(self) -> CachedLayouts:
        """The layouts runs are compared on (``EVALUATION_SPLIT``)."""
        return getattr(self, EVALUATION_SPLIT)

    def sides(self) -> list[tuple[str, CachedLayouts]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]

    def split_csv(self) -> str:
        """The split as CSV text, ``layout_path, scene_id, type, split, group, hash`` (paths as the
        manifest spells them, relative to its folder; split train, val or test; group the
        ``CachedLayouts.groups`` id; hash the class-map hash): what each run trained, validated and
        will be tested on."""
        folder, rows = self.manifest.path.resolve().parent, []
        for side, layouts in self.sides():
            for row in layouts.indices:
                record = self.cache.records[row]
                path = relative_path(record.path, folder)
                rows.append((path, record.scene_id, record.type, side, self.cache.groups[row], self.cache.hashes[row]))
        return csv_text(("layout_path", "scene_id", "type", "split", "group", "hash"), rows)

    def split_summary(self) -> dict:
        """``split_summary.json``: the scheme, fractions and seed, the layouts and groups per side,
        and the duplicate figures (``manifest.SplitFigures``)."""
        return dataclasses.asdict(self.figures)

    def split_state(self) -> dict:
        """What a checkpoint records of the split, to refuse resuming under another: the scheme,
        fractions, seed, and a digest of which layout is on which side (paths relative to the
        manifest's folder, so a moved data set is the same split)."""
        digest, folder = hashlib.sha256(), self.manifest.path.resolve().parent
        for line in sorted(
            f"{relative_path(self.cache.records[row].path, folder)}\t{side}"
            for side, layouts in self.sides()
            for row in layouts.indices
        ):
            digest.update(line.encode() + b"\n")
        return {
            "scheme": SPLIT_SCHEME,
            "val_fraction": self.figures.val_fraction,
            "test_fraction": self.figures.test_fraction,
            "split_seed": self.figures.split_seed,
            "digest": digest.hexdigest(),
        }

    def summary(self, root: str | Path | None = None, shown: int = 20) -> str:
        """What was read, with what a user must see: the split and its duplicates, the rows skipped
        and the off-palette pixels. Paths under ``root`` (the output root) are shown relative to it."""
        lines = [self.manifest.summary(root), *self.figures.lines()]
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
    """Manifest (or synthetic set) -> decoded cache -> deterministic train/validation/test split."""
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
    # from one side of the split to the other (an unreadable image has no hash: it joins its
    # scene's group only, which its scene's other layouts are in anyway).
    position = {r.path: i for i, r in enumerate(cache.records)}
    hashes = [cache.hashes[position[r.path]] if r.path in position else None for r in manifest.records]
    split = split_records(
        manifest.records, hashes, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed, source=path
    )
    rows = np.array([position.get(r.path, -1) for r in manifest.records], dtype=np.int64)
    sides = {}
    for k, side in enumerate(SIDES):
        chosen = rows[(split.sides == k) & (rows >= 0)]
        if len(chosen) == 0:
            raise LayoutReadError(f"{path}: no readable layouts left in the {SIDE_NAMES[side]} split")
        sides[side] = CachedLayouts(cache, np.sort(chosen))
    cache_sides = np.empty(len(cache), dtype=np.int64)
    cache_sides[rows[rows >= 0]] = split.sides[rows >= 0]
    figures = split_figures(
        cache.hashes, cache.groups, cache_sides, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed
    )
    return LayoutData(manifest, cache, sides["train"], sides["val"], sides["test"], figures)


class BatchLoader:
    """Batches of a cached dataset in the order of an ``EpochBatches`` sampler.

    With ``workers`` > 0, that many background threads gather batches ahead of the training loop
    (the reads release the GIL), into pinned memory when the model is on
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
        if self.workers == 0:
            return map(self._load, self.sampler)
        return read_ahead(self._load, self.sampler, self.workers, 2 * self.workers + 2)


def read_ahead(load: Callable, items: Iterable, workers: int, ahead: int) -> Iterator:
    """``load(item)`` of each item, in order, computed by ``workers`` threads up to ``ahead`` items
    before the one the caller is at (reads and PNG decoding release the GIL)."""
    items = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="imginav-read") as pool:
        pending = deque(pool.submit(load, item) for item in itertools.islice(items, ahead))
        while pending:
            result = pending.popleft().result()
            following = next(items, None)
            if following is not None:
                pending.append(pool.submit(load, following))
            yield result


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
