"""The decoded cache: every layout PNG decoded and colour-matched once, into file-backed arrays.

``class_map.u8`` holds (N, R, R) uint8 class indices (``IGNORE_INDEX`` for off-palette pixels).
A layout whose every pixel is a palette colour is its class map: its RGB image is rebuilt by a
palette lookup when a batch is formed (``batches.rgb_from_class_maps``), bit for bit the decoded
PNG. Only the layouts with off-palette pixels keep their exact RGB, in ``off_palette_rgb.u8``
((M, R, R, 3) uint8, one image per row listed in ``meta.json``'s ``rgb_rows``). At 512 x 512 that
is 262 KB a layout instead of 1 MB. ``meta.json`` also holds the paths, labels, each image's
share of off-palette pixels, its class-map hash (``palette.class_map_hash``: what the split and
the probe call identical) and the rows skipped as unreadable; ``off_palette.csv`` the images with
off-palette pixels, most first. The folder is keyed by the manifest's content, the resolution and
``CACHE_VERSION``, so any epoch after the first, and any later run on the same data, reads
decoded bytes (``batches.CachedLayouts``): no PNG decoding and no colour matching on the training path; a cache of
another version is never read, but rebuilt in a folder of its own. It is built in a staging folder
and renamed into place whole, under a lock shared by concurrent jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import LayoutReadError
from ..files import LockHeldError, build_folder, csv_text, exclusive_lock, write_text_atomic
from ..outputs import relative_path, shown_path
from ..palette import class_map_hash, rgb_to_class
from .manifest import LayoutRecord, group_layouts

# 2: off_palette.csv; 3: RGB only for off-palette layouts, class-map hashes; 4: the layouts named by
# their path relative to the manifest's folder, so a copied data set (or a copied study, whose
# synthetic set and cache travel with it) finds its cache
CACHE_VERSION = 4
CLASS_MAPS = "class_map.u8"
OFF_PALETTE_RGB = "off_palette_rgb.u8"
# The modes Pillow gives 8-bit PNGs: bilevel, grayscale, palette and RGB, each with or without alpha.
EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA"}


def load_layout(path: str | Path, resolution: int, where: str = "") -> tuple[np.ndarray, np.ndarray, int]:
    """Decode one layout PNG to (uint8 RGB (R, R, 3), uint8 class map (R, R), off-palette pixels).

    Grayscale, palette-mode and RGBA PNGs are converted to RGB (alpha is dropped). A square image
    of another size is resized with nearest-neighbour, which keeps every colour in the palette.
    Anything else is a LayoutReadError naming ``where``: a missing, empty, truncated or corrupt
    file; another format (a JPEG's compression changes the class colours); a 16-bit PNG; an
    image that is not square.
    """
    where = where or str(path)
    try:
        with Image.open(path) as image:
            _check_header(image, where)
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
            if image.size != (resolution, resolution):
                image = image.resize((resolution, resolution), Image.Resampling.NEAREST)
            rgb = np.asarray(image, dtype=np.uint8)
    except LayoutReadError:
        raise
    except FileNotFoundError:
        raise LayoutReadError(f"{where}: image file not found") from None
    except UnidentifiedImageError:
        empty = Path(path).stat().st_size == 0
        why = "the file is empty (0 bytes)" if empty else "not an image file"
        raise LayoutReadError(f"{where}: cannot decode the image: {why}") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise LayoutReadError(f"{where}: cannot decode the image ({type(err).__name__}: {err})") from None
    class_map, unknown = rgb_to_class(rgb)
    return rgb, class_map, unknown


def _check_header(image: Image.Image, where: str) -> None:
    """Refuse, before decoding the pixels, an image that cannot be a layout."""
    if image.format != "PNG":
        raise LayoutReadError(
            f"{where}: a {image.format} file; layouts must be PNG, which keeps every class colour exact"
        )
    if image.mode not in EIGHT_BIT_MODES:
        raise LayoutReadError(f"{where}: PNG mode {image.mode}; expected an 8-bit RGB, RGBA, grayscale or palette PNG")
    width, height = image.size
    if width != height:
        raise LayoutReadError(f"{where}: {width} x {height} pixels; expected a square layout")


@dataclass
class LayoutCache:
    """A cache's decoded layouts, in the order of ``records`` (``batches.CachedLayouts`` reads them)."""

    folder: Path
    records: list[LayoutRecord]
    resolution: int
    labels: np.ndarray  # int64 (N,): room 0, scene 1
    off_palette: np.ndarray  # float32 (N,): share of pixels outside the palette
    hashes: np.ndarray  # str (N,): palette.class_map_hash of each class map
    rgb_rows: np.ndarray  # int64 (M,): the rows whose exact RGB is kept (off-palette pixels), ascending
    skipped: list[str]  # messages for rows skipped because their image was unreadable

    def __len__(self) -> int:
        return len(self.records)

    @cached_property
    def groups(self) -> np.ndarray:
        """int64 (N,): the split's group of each row (``manifest.group_layouts``): its scene,
        joined with every scene holding an identical layout."""
        return group_layouts(self.records, list(self.hashes))

    @cached_property
    def rgb_slot(self) -> np.ndarray:
        """int64 (N,): each row's image in ``off_palette_rgb.u8``, -1 where the class map is the image."""
        slot = np.full(len(self.records), -1, dtype=np.int64)
        slot[self.rgb_rows] = np.arange(len(self.rgb_rows))
        return slot

    def off_palette_summary(self, shown: int = 3, root: str | Path | None = None) -> str:
        """How many images have pixels outside the palette, the worst ones, where the rest are."""
        affected = np.flatnonzero(self.off_palette > 0)
        if len(affected) == 0:
            return "every pixel of every layout is a palette colour"
        worst = affected[np.argsort(-self.off_palette[affected], kind="stable")][:shown]
        listed = ", ".join(
            f"line {self.records[i].line} {self.records[i].path.name} ({self.off_palette[i]:.2%})" for i in worst
        )
        return (
            f"{len(affected)} of {len(self)} layouts have pixels outside the palette (ignored by the "
            f"segmentation loss; images kept), mean share {self.off_palette[affected].mean():.2%}; most: "
            f"{listed}; every image: {shown_path(self.folder / 'off_palette.csv', root)}"
        )


def cache_key(records: list[LayoutRecord], resolution: int, base: Path) -> str:
    """The cache's folder name. A layout is named by its path relative to the manifest's folder
    (``base``), so a copied data set finds its cache."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} r{resolution}\n".encode())
    for r in records:
        digest.update(f"{relative_path(r.path, base)}\t{r.type}\t{int(r.is_empty)}\n".encode())
    return digest.hexdigest()[:20]


def _decode_into(args: tuple[Path, int, int, list[tuple[int, str, str]]]) -> list[tuple[int, int, str, str]]:
    """Worker: decode a chunk of images, class maps straight into the memory-mapped array; the
    exact RGB of the images with off-palette pixels, in slot order, into ``rgb.FIRST.part``.
    Returns (slot, off-palette pixels or -1, error, class-map hash) per image."""
    folder, resolution, first, jobs = args
    n = int(json.loads((folder / "shape.json").read_text())["n"])
    class_maps = np.memmap(folder / CLASS_MAPS, dtype=np.uint8, mode="r+", shape=(n, resolution, resolution))
    results = []
    with open(_rgb_part(folder, first), "wb") as exact:
        for slot, path, where in jobs:
            try:
                rgb, class_map, unknown = load_layout(path, resolution, where)
            except LayoutReadError as err:
                results.append((slot, -1, str(err), ""))
                continue
            class_maps[slot] = class_map
            if unknown:
                exact.write(np.ascontiguousarray(rgb).tobytes())
            results.append((slot, unknown, "", class_map_hash(class_map)))
    class_maps.flush()
    return results


def _rgb_part(folder: Path, first: int) -> Path:
    return folder / f"rgb.{first}.part"


def build_cache(
    records: list[LayoutRecord],
    resolution: int,
    cache_root: str | Path,
    manifest: str | Path,
    skip_broken: bool = False,
    workers: int | None = None,
    log=print,
) -> LayoutCache:
    """Decode ``records`` at ``resolution`` into ``cache_root/<key>/`` unless already there.

    An unreadable image stops the build with a message naming the manifest line and file (nothing
    is left behind), or with ``skip_broken`` is left out and listed in ``LayoutCache.skipped``.
    """
    base = Path(manifest).resolve().parent
    folder = Path(cache_root) / cache_key(records, resolution, base)
    cache = _open(folder, records, resolution, base)
    if cache is None:
        _remove_abandoned_builds(folder.parent, log)
        build_folder(
            folder,
            lambda: _open(folder, records, resolution, base) is not None,
            lambda staging: _build(staging, folder, records, resolution, manifest, skip_broken, workers, log),
        )
        cache = _open(folder, records, resolution, base)
    return cache


def _remove_abandoned_builds(cache_root: Path, log) -> None:
    """Delete the staging folders of builds killed mid-way, whatever their key: at 512 x 512 one
    holds tens of GB, and a changed manifest would never build (and clean) that key again.
    A staging folder whose lock is free has no builder left; a held lock means a build in progress."""
    for staging in cache_root.glob(".*.partial"):
        try:
            with exclusive_lock(cache_root / f"{staging.name.removesuffix('.partial')}.lock"):
                shutil.rmtree(staging, ignore_errors=True)
        except LockHeldError:
            continue
        log(f"removed {shown_path(staging)}, left by a cache build that was killed")


def _build(
    staging: Path,
    folder: Path,
    records: list[LayoutRecord],
    resolution: int,
    manifest: str | Path,
    skip_broken: bool,
    workers: int | None,
    log,
) -> None:
    """Decode into ``staging``, which becomes ``folder``."""
    for older, version, size in older_caches(folder.parent):
        log(
            f"{shown_path(older)} holds a decoded cache of an older version ({version}; {size / 1e9:.1f} GB), "
            "which this version never reads: delete it unless an older checkout still uses it"
        )
    n = len(records)
    (staging / "shape.json").write_text(json.dumps({"n": n}))
    with open(staging / CLASS_MAPS, "wb") as handle:
        handle.truncate(n * resolution * resolution)
    jobs = [(i, str(r.path), f"{manifest}, line {r.line}: {r.path}") for i, r in enumerate(records)]
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = max(1, min(256, n // (workers * 4) or 1))
    chunks = [(staging, resolution, i, jobs[i : i + chunk]) for i in range(0, n, chunk)]
    log(f"decoding {n} layouts at {resolution}x{resolution} into {shown_path(folder)} ({workers} processes)")
    unknown = np.zeros(n, dtype=np.int64)
    hashes = [""] * n
    errors: dict[int, str] = {}
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            outcomes = [r for part in pool.map(_decode_into, chunks) for r in part]
    else:
        outcomes = [r for c in chunks for r in _decode_into(c)]
    for slot, count, error, digest in outcomes:
        if error:
            errors[slot] = error
        else:
            unknown[slot], hashes[slot] = count, digest
    if errors and not skip_broken:
        first = errors[min(errors)]
        more = f" (and {len(errors) - 1} more unreadable images)" if len(errors) > 1 else ""
        raise LayoutReadError(first + more + "; set data.skip_broken: true to skip such rows")

    keep = np.array([i for i in range(n) if i not in errors], dtype=np.int64)
    if len(keep) == 0:
        raise LayoutReadError(f"{manifest}: none of the {n} images could be read; first: {errors[min(errors)]}")
    if errors:  # compact the class maps to the readable images
        _compact(staging, n, resolution, keep)
    rgb_rows = np.flatnonzero(unknown[keep] > 0)
    _gather_exact_rgb(staging, [c[2] for c in chunks], len(rgb_rows), resolution)
    kept = [records[i] for i in keep]
    shares = unknown[keep] / float(resolution * resolution)
    # the images with off-palette pixels, most first (their share at the cache's resolution)
    worst_first = [i for i in np.argsort(-shares, kind="stable") if shares[i] > 0]
    rows = [(kept[i].path, f"{shares[i]:.6f}") for i in worst_first]
    write_text_atomic(staging / "off_palette.csv", csv_text(("layout_path", "off_palette_share"), rows))
    meta = {
        "version": CACHE_VERSION,
        "resolution": resolution,
        "n": len(kept),
        "paths": [relative_path(r.path, Path(manifest).resolve().parent) for r in kept],
        "labels": [r.label for r in kept],
        "off_palette": shares.tolist(),
        "hashes": [hashes[i] for i in keep],
        "rgb_rows": rgb_rows.tolist(),
        "skipped": [errors[i] for i in sorted(errors)],
    }
    (staging / "shape.json").write_text(json.dumps({"n": len(kept)}))
    write_text_atomic(staging / "meta.json", json.dumps(meta))
    log(
        f"cached {len(kept)} layouts: class maps, and the exact RGB of the {len(rgb_rows)} with off-palette "
        f"pixels ({_size(staging) / 1e9:.2f} GB)"
    )


def _gather_exact_rgb(staging: Path, firsts: list[int], count: int, resolution: int) -> None:
    """Join the workers' ``rgb.FIRST.part`` files, in slot order, into ``off_palette_rgb.u8``."""
    target_path = staging / OFF_PALETTE_RGB
    target_path.write_bytes(b"")
    image_bytes = resolution * resolution * 3
    written = 0
    with open(target_path, "ab") as target:
        for first in firsts:
            part = _rgb_part(staging, first)
            with open(part, "rb") as source:
                shutil.copyfileobj(source, target, 64 * image_bytes)
            written += part.stat().st_size
            part.unlink()
    if written != count * image_bytes:
        raise RuntimeError(f"{staging}: {written} bytes of exact RGB for {count} images of {image_bytes} bytes")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _compact(staging: Path, n: int, resolution: int, keep: np.ndarray) -> None:
    shape = (resolution, resolution)
    source = np.memmap(staging / CLASS_MAPS, dtype=np.uint8, mode="r", shape=(n, *shape))
    target_path = staging / f"{CLASS_MAPS}.compact"
    target = np.memmap(target_path, dtype=np.uint8, mode="w+", shape=(len(keep), *shape))
    for start in range(0, len(keep), 256):
        target[start : start + 256] = source[keep[start : start + 256]]
    target.flush()
    del source, target
    os.replace(target_path, staging / CLASS_MAPS)


def _open(folder: Path, records: list[LayoutRecord], resolution: int, base: Path) -> LayoutCache | None:
    """The cache in ``folder``; None where there is none of this version (built again then)."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != CACHE_VERSION or meta.get("resolution") != resolution:
        return None
    by_path = {relative_path(r.path, base): r for r in records}
    kept = [by_path[p] for p in meta["paths"]]
    return LayoutCache(
        folder=folder,
        records=kept,
        resolution=resolution,
        labels=np.asarray(meta["labels"], dtype=np.int64),
        off_palette=np.asarray(meta["off_palette"], dtype=np.float32),
        hashes=np.asarray(meta["hashes"], dtype=str),
        rgb_rows=np.asarray(meta["rgb_rows"], dtype=np.int64),
        skipped=list(meta["skipped"]),
    )


def older_caches(cache_root: Path) -> list[tuple[Path, int, int]]:
    """(folder, version, bytes) of the decoded caches under ``cache_root`` built by an older version,
    which this one never reads: at 512 x 512 each holds up to tens of GB."""
    found = []
    for meta in sorted(Path(cache_root).glob("*/meta.json")):
        with open(meta, "rb") as handle:
            named = re.search(rb'"version": (\d+)', handle.read(64))  # the first key json.dumps writes
        if named and int(named[1]) < CACHE_VERSION:
            found.append((meta.parent, int(named[1]), _size(meta.parent)))
    return found
