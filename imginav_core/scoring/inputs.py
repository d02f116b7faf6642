"""What the scorer reads: real layouts as class maps (``ReferenceSet``), generated ones as RGB.

Real layouts come from a ``layouts.csv`` manifest and are kept as class maps (1 byte a pixel);
generated ones from a folder of PNGs or a manifest, as RGB, because their off-palette colours
are what several scores measure. Every unusable input stops with the project's error naming
the file: a generated set must be one square size, 8-bit, PNG only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.cache import load_layout
from ..data.manifest import group_keys, read_manifest
from ..errors import ConfigError, LayoutReadError, ManifestError
from ..outputs import shown_path
from ..palette import class_map_hash, class_to_rgb


class ClassMapRows:
    """Class maps kept elsewhere (the layout cache's memory map), read when sliced: a reference set
    of thousands of 512 x 512 layouts (256 KiB each) without holding them in memory.

    ``read(positions)`` returns the (n, R, R) uint8 class maps at ``positions`` in that order;
    indexing (an int, a slice, an array of positions) reads the rows asked for, in that order."""

    def __init__(self, read: Callable[[np.ndarray], np.ndarray], positions, resolution: int) -> None:
        self.read = read
        self.positions = np.asarray(positions, dtype=np.int64)
        self.shape = (len(self.positions), resolution, resolution)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    @classmethod
    def of_array(cls, array: np.ndarray, rows=None) -> ClassMapRows:
        """Rows of an (N, R, R) uint8 array (all of them by default), e.g. a memory map."""
        rows = np.arange(len(array)) if rows is None else rows
        return cls(lambda positions: np.asarray(array[positions]), rows, array.shape[-1])

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index) -> np.ndarray:
        positions = self.positions[index]
        if np.ndim(positions) == 0:
            return self.read(np.array([positions]))[0]
        return self.read(positions)

    def subset(self, index) -> ClassMapRows:
        return ClassMapRows(self.read, self.positions[np.asarray(index)], self.shape[-1])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


@dataclass
class ReferenceSet:
    """Class maps of real layouts, with what the scorer needs to split and report them."""

    class_maps: np.ndarray | ClassMapRows  # (N, R, R) uint8 class indices (IGNORE_INDEX for off-palette pixels)
    labels: np.ndarray  # (N,) int: 0 room, 1 scene
    source: str  # for messages and the JSON
    scene_ids: np.ndarray | None = None  # (N,) str; None: every layout is its own scene
    # What the scorer derives from the layouts alone (pixel statistics, training targets), kept so
    # that the scorers of several feature-network seeds compute it once.
    derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.class_maps, ClassMapRows):
            self.class_maps = np.asarray(self.class_maps)
        if (
            self.class_maps.dtype != np.uint8
            and np.issubdtype(self.class_maps.dtype, np.integer)
            and self.class_maps.size
            and 0 <= self.class_maps.min()
            and self.class_maps.max() <= 255
        ):
            self.class_maps = self.class_maps.astype(np.uint8)  # int64 class maps, as a training batch holds
        self.labels = np.asarray(self.labels, dtype=np.int64)
        shape = self.class_maps.shape
        if self.class_maps.dtype != np.uint8 or len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"{self.source}: class_maps must be (N, R, R) uint8, got {self.class_maps.dtype} {shape}")
        if self.labels.shape != (shape[0],):
            raise ValueError(f"{self.source}: {len(self.labels)} labels for {shape[0]} class maps")
        if self.scene_ids is not None:
            self.scene_ids = np.asarray(self.scene_ids, dtype=str)
            if self.scene_ids.shape != (shape[0],):
                raise ValueError(f"{self.source}: {len(self.scene_ids)} scene ids for {shape[0]} class maps")

    def __len__(self) -> int:
        return len(self.class_maps)

    @property
    def resolution(self) -> int:
        return int(self.class_maps.shape[1])

    def subset(self, idx, source: str | None = None) -> ReferenceSet:
        idx = np.asarray(idx)
        maps = self.class_maps.subset(idx) if isinstance(self.class_maps, ClassMapRows) else self.class_maps[idx]
        return ReferenceSet(
            maps,
            self.labels[idx],
            source or self.source,
            None if self.scene_ids is None else self.scene_ids[idx],
        )

    def groups(self) -> np.ndarray:
        """An int64 group per layout: a scene with its rooms, joined with every scene holding an
        identical layout (the same class map), as the study's split groups them; computed once."""
        if "groups" not in self.derived:
            scenes = self.scene_ids if self.scene_ids is not None else np.arange(len(self)).astype(str)
            hashes = [
                class_map_hash(m) for start in range(0, len(self), 256) for m in self.class_maps[start : start + 256]
            ]
            self.derived["groups"] = group_keys([str(k) for k in scenes], hashes)
        return self.derived["groups"]

    def rgb(self) -> np.ndarray:
        """The layouts as (N, R, R, 3) uint8 RGB; off-palette pixels (whose colour is not kept) black."""
        return class_to_rgb(self.class_maps[:])

    def rgb_view(self) -> RGBView:
        """The same, converted a slice at a time, for the batched readers."""
        return RGBView(self.class_maps)


class RGBView:
    """Class maps that read as (N, R, R, 3) RGB one slice at a time: the RGB of thousands of
    512 x 512 layouts at once would not fit in memory, their class maps do."""

    def __init__(self, class_maps: np.ndarray | ClassMapRows) -> None:
        self.class_maps = class_maps
        self.shape = (*class_maps.shape, 3)

    def __len__(self) -> int:
        return len(self.class_maps)

    def __getitem__(self, index) -> np.ndarray:
        return class_to_rgb(self.class_maps[index])


def reference_from_manifest(path: str | Path, resolution: int) -> ReferenceSet:
    """Every non-empty layout of a ``layouts.csv`` as a class map at ``resolution``
    (nearest-neighbour). Errors name the manifest line and the file."""
    resolution = _check_resolution(resolution)
    records = read_manifest(path).records
    where = [f"{path}, line {r.line}: {r.path}" for r in records]
    class_maps = np.empty((len(records), resolution, resolution), dtype=np.uint8)

    def decode(i: int) -> None:
        class_maps[i] = load_layout(records[i].path, resolution, where[i])[1]

    _in_threads(decode, len(records))
    return ReferenceSet(
        class_maps,
        np.array([r.label for r in records]),
        shown_path(path),
        np.array([r.scene_id for r in records], dtype=str),
    )


def _in_threads(function, n: int) -> None:
    """``function(i)`` for i < n on a few threads; the first error (in order) is raised at once.

    Decoding is zlib and Pillow code that releases the GIL: threads give most of a process pool's
    speed without copying the arrays back.
    """
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(function, i) for i in range(n)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:  # an error in a 27,000-image set should not wait for the rest
                future.cancel()
            raise


def split_by_scene(
    reference: ReferenceSet, held_fraction: float = 0.3, seed: int = 0
) -> tuple[ReferenceSet, ReferenceSet]:
    """(fit, held): whole groups (``ReferenceSet.groups``) on one side, about ``held_fraction`` of
    the layouts held.

    A scene's rooms look alike (same walls, same furniture), and the real set lists the same layout
    under several scenes; with some on each side, held-out layouts would have copies in ``fit`` and
    real-vs-real memorisation would look like copying. The same seed and layouts always give the
    same split.
    """
    if not 0 < held_fraction < 1:
        raise ConfigError(f"held_fraction = {held_fraction}; expected a number between 0 and 1")
    scenes, group = np.unique(reference.groups(), return_inverse=True)
    if len(scenes) < 2:
        raise ManifestError(
            f"{reference.source}: {len(reference)} layouts of {len(scenes)} scene; "
            "need at least 2 scenes to hold some out"
        )
    order = np.random.default_rng(seed).permutation(len(scenes))
    sizes = np.bincount(group, minlength=len(scenes))[order]
    # whole scenes until the held part reaches its share; at least one scene on each side
    n_held = int(np.clip(np.searchsorted(np.cumsum(sizes), held_fraction * len(reference)) + 1, 1, len(scenes) - 1))
    held_scene = np.zeros(len(scenes), dtype=bool)
    held_scene[order[:n_held]] = True
    held = held_scene[group]
    return (
        reference.subset(np.flatnonzero(~held), f"{reference.source}, fit part (split seed {seed})"),
        reference.subset(np.flatnonzero(held), f"{reference.source}, held-out part (split seed {seed})"),
    )


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ConfigError(f"resolution = {resolution!r}; expected an image side in pixels (an integer >= 2)")
    return int(resolution)


def generated_files(path: str | Path) -> list[tuple[Path, str]]:
    """The generated layouts' files, each with how to name it in a message: a folder's PNGs in
    name order, or a manifest's rows (empty ones included: emptiness is a real layout's label)."""
    path = Path(path)
    if not path.exists():
        raise LayoutReadError(f"{path}: not found; expected a folder of PNG layouts or a layouts.csv manifest")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise LayoutReadError(f"{path}: expected a folder of PNG layouts or a layouts.csv manifest")
        manifest = read_manifest(path, drop_empty=False)
        return [(r.path, f"{path}, line {r.line}: {r.path}") for r in manifest.records]
    files = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):  # a writer's temporaries, a desktop's metadata
            continue
        if not entry.is_file() or entry.suffix.lower() != ".png":
            what = "a folder" if entry.is_dir() else "not a .png file"
            raise LayoutReadError(
                f"{entry}: {what}; the folder of generated layouts must hold only PNG files "
                "(or give a layouts.csv listing them)"
            )
        files.append((entry, str(entry)))
    if not files:
        raise LayoutReadError(f"{path}: no PNG files; expected the generated layouts as PNGs")
    return files


def _square_side(path: Path) -> int | None:
    """The side of a square image from its header; None when load_layout should say what is wrong."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - load_layout names every kind of unreadable file
        return None
    return width if width == height else None


def read_generated(path: str | Path, resolution: int | None = None) -> np.ndarray:
    """Generated layouts as (M, R, R, 3) uint8 RGB, from a folder of PNGs or a ``layouts.csv``.

    They must all be one square size; ``resolution`` defaults to it, another resolution resizes
    them (nearest-neighbour). Grayscale, palette and RGBA PNGs are read as RGB, as load_layout does.
    """
    files = generated_files(path)
    side = None
    first = None
    for file, where in files:
        this = _square_side(file)
        if this is None:
            load_layout(file, 2, where)  # raises its message (not square, not an image, ...)
            continue
        if side is None:
            side, first = this, where
        elif this != side:
            raise LayoutReadError(
                f"{where}: {this} x {this} pixels, but {first} is {side} x {side}; "
                "the generated layouts must all be one size"
            )
    resolution = _check_resolution(resolution if resolution is not None else side)
    rgb = np.empty((len(files), resolution, resolution, 3), dtype=np.uint8)

    def decode(i: int) -> None:
        rgb[i] = load_layout(files[i][0], resolution, files[i][1])[0]

    _in_threads(decode, len(files))
    return rgb
