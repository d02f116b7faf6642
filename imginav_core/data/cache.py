"""The decoded cache: every layout PNG decoded and colour-matched once, into file-backed arrays.

``rgb.u8`` holds (N, R, R, 3) uint8 images and ``class_map.u8`` (N, R, R) uint8 class indices
(``IGNORE_INDEX`` for off-palette pixels); ``meta.json`` the paths, labels, each image's share
of off-palette pixels and the rows skipped as unreadable; ``off_palette.csv`` the images with
off-palette pixels, most first. The folder is keyed by the manifest's content and the
resolution, so any epoch after the first, and any later run on the same data, reads
memory-mapped bytes: no PNG decoding and no colour matching on the training path. It is built
in a staging folder and renamed into place whole, under a lock shared by concurrent jobs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import LayoutReadError
from ..files import LockHeldError, exclusive_lock, file_lock, write_text_atomic
from ..outputs import shown_path
from ..palette import rgb_to_class
from .manifest import LayoutRecord

CACHE_VERSION = 2  # 2: off_palette.csv
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
    """Memory-mapped decoded layouts, in the order of ``records``."""

    folder: Path
    records: list[LayoutRecord]
    resolution: int
    labels: np.ndarray  # int64 (N,): room 0, scene 1
    off_palette: np.ndarray  # float32 (N,): share of pixels outside the palette
    skipped: list[str]  # messages for rows skipped because their image was unreadable

    def __len__(self) -> int:
        return len(self.records)

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

    def arrays(self, mode: str = "r") -> tuple[np.memmap, np.memmap]:
        n, r = len(self.records), self.resolution
        rgb = np.memmap(self.folder / "rgb.u8", dtype=np.uint8, mode=mode, shape=(n, r, r, 3))
        class_map = np.memmap(self.folder / "class_map.u8", dtype=np.uint8, mode=mode, shape=(n, r, r))
        return rgb, class_map


def cache_key(records: list[LayoutRecord], resolution: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION} r{resolution}\n".encode())
    for r in records:
        digest.update(f"{r.path}\t{r.type}\t{int(r.is_empty)}\n".encode())
    return digest.hexdigest()[:20]


def _decode_into(args: tuple[Path, int, list[tuple[int, str, str]]]) -> list[tuple[int, int, str]]:
    """Worker: decode a chunk of images straight into the memory-mapped arrays."""
    folder, resolution, jobs = args
    n = int(json.loads((folder / "shape.json").read_text())["n"])
    rgb = np.memmap(folder / "rgb.u8", dtype=np.uint8, mode="r+", shape=(n, resolution, resolution, 3))
    class_map = np.memmap(folder / "class_map.u8", dtype=np.uint8, mode="r+", shape=(n, resolution, resolution))
    results = []
    for slot, path, where in jobs:
        try:
            rgb[slot], class_map[slot], unknown = load_layout(path, resolution, where)
            results.append((slot, unknown, ""))
        except LayoutReadError as err:
            results.append((slot, -1, str(err)))
    rgb.flush()
    class_map.flush()
    return results


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
    folder = Path(cache_root) / cache_key(records, resolution)
    cache = _open(folder, records, resolution)
    if cache is not None:
        return cache
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(folder.parent, log)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        cache = _open(folder, records, resolution)
        if cache is not None:
            return cache
        staging = folder.parent / f".{folder.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            cache = _build(staging, folder, records, resolution, manifest, skip_broken, workers, log)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
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
    manifest,
    skip_broken: bool,
    workers: int | None,
    log,
) -> LayoutCache:
    n = len(records)
    (staging / "shape.json").write_text(json.dumps({"n": n}))
    for name, shape in (("rgb.u8", (n, resolution, resolution, 3)), ("class_map.u8", (n, resolution, resolution))):
        with open(staging / name, "wb") as handle:
            handle.truncate(int(np.prod(shape)))
    jobs = [(i, str(r.path), f"{manifest}, line {r.line}: {r.path}") for i, r in enumerate(records)]
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = max(1, min(256, n // (workers * 4) or 1))
    chunks = [(staging, resolution, jobs[i : i + chunk]) for i in range(0, n, chunk)]
    log(f"decoding {n} layouts at {resolution}x{resolution} into {shown_path(folder)} ({workers} processes)")
    unknown = np.zeros(n, dtype=np.int64)
    errors: dict[int, str] = {}
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            outcomes = [r for part in pool.map(_decode_into, chunks) for r in part]
    else:
        outcomes = [r for c in chunks for r in _decode_into(c)]
    for slot, count, error in outcomes:
        if error:
            errors[slot] = error
        else:
            unknown[slot] = count
    if errors and not skip_broken:
        first = errors[min(errors)]
        more = f" (and {len(errors) - 1} more unreadable images)" if len(errors) > 1 else ""
        raise LayoutReadError(first + more + "; set data.skip_broken: true to skip such rows")

    keep = np.array([i for i in range(n) if i not in errors], dtype=np.int64)
    if len(keep) == 0:
        raise LayoutReadError(f"{manifest}: none of the {n} images could be read; first: {errors[min(errors)]}")
    if errors:  # compact the arrays to the readable images
        _compact(staging, n, resolution, keep)
    kept = [records[i] for i in keep]
    shares = unknown[keep] / float(resolution * resolution)
    _write_off_palette(staging / "off_palette.csv", kept, shares)
    meta = {
        "version": CACHE_VERSION,
        "resolution": resolution,
        "n": len(kept),
        "paths": [str(r.path) for r in kept],
        "labels": [r.label for r in kept],
        "off_palette": shares.tolist(),
        "skipped": [errors[i] for i in sorted(errors)],
    }
    (staging / "shape.json").write_text(json.dumps({"n": len(kept)}))
    write_text_atomic(staging / "meta.json", json.dumps(meta))
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return _open(folder, records, resolution)


def _write_off_palette(path: Path, records: list[LayoutRecord], shares: np.ndarray) -> None:
    """The images with off-palette pixels, most first (their share at the cache's resolution)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["layout_path", "off_palette_share"])
    for i in np.argsort(-shares, kind="stable"):
        if shares[i] > 0:
            writer.writerow([str(records[i].path), f"{shares[i]:.6f}"])
    write_text_atomic(path, text.getvalue())


def _compact(staging: Path, n: int, resolution: int, keep: np.ndarray) -> None:
    for name, shape in (("rgb.u8", (resolution, resolution, 3)), ("class_map.u8", (resolution, resolution))):
        source = np.memmap(staging / name, dtype=np.uint8, mode="r", shape=(n, *shape))
        target_path = staging / f"{name}.compact"
        target = np.memmap(target_path, dtype=np.uint8, mode="w+", shape=(len(keep), *shape))
        for start in range(0, len(keep), 256):
            target[start : start + 256] = source[keep[start : start + 256]]
        target.flush()
        del source, target
        os.replace(target_path, staging / name)


def _open(folder: Path, records: list[LayoutRecord], resolution: int) -> LayoutCache | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    by_path = {str(r.path): r for r in records}
    kept = [by_path[p] for p in meta["paths"]]
    return LayoutCache(
        folder=folder,
        records=kept,
        resolution=resolution,
        labels=np.asarray(meta["labels"], dtype=np.int64),
        off_palette=np.asarray(meta["off_palette"], dtype=np.float32),
        skipped=list(meta["skipped"]),
    )
