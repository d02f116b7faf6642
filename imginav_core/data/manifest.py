"""Reader for the real manifest, and the deterministic train/validation/test split.

Two formats, told apart by the header (``FORMATS``): ``layouts.csv``, one row per layout, and the
original pipeline's all-in-one manifest, one row per viewpoint, whose rows of one layout image are
collapsed into one layout (book/using/probe.md, "The data and its split", describes both; its
bad-input page says what each broken row or file does). Relative layout paths resolve against
the manifest's own folder, so a dataset folder can be moved or copied as a whole. Errors name the
file, the line and the column; a broken row stops the reader, or with ``skip_broken`` is left out
and listed in ``Manifest.skipped``; a broken file always stops it.

The split keeps together what a model could recognise across sides: a scene and its rooms (crops
of it, one ``scene_id``), and identical layouts (the same class map under several scenes, by
``palette.class_map_hash``). Scenes sharing an identical layout form one group; whole groups go
to train, validation or test.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ManifestError
from ..outputs import shown_path

COLUMNS = ("scene_id", "type", "room_id", "layout_path", "is_empty")
TYPE_LABELS = {"room": 0, "scene": 1}


@dataclass(frozen=True)
class ManifestFormat:
    """Where a manifest format keeps what the reader needs."""

    name: str
    columns: dict[str, str]  # the reader's key (COLUMNS) -> the file's column
    agree: tuple[str, ...]  # what rows listing the same image must agree on (else the later row is broken)
    per_viewpoint: bool  # a row per viewpoint: repeated rows of an image are expected, and collapsed


LAYOUTS_CSV = ManifestFormat("layouts.csv", {key: key for key in COLUMNS}, ("type", "is_empty"), False)
ALL_IN_ONE = ManifestFormat(
    "the all-in-one manifest",
    {**{key: key for key in COLUMNS}, "type": "sample_type", "layout_path": "layout_image"},
    ("scene_id", "type", "is_empty"),
    True,
)
FORMATS = (LAYOUTS_CSV, ALL_IN_ONE)


@dataclass(frozen=True)
class LayoutRecord:
    line: int  # line in the manifest file (the header is line 1), for messages
    scene_id: str
    type: str  # "room" or "scene"
    room_id: str
    path: Path  # resolved
    is_empty: bool
    written: str = ""  # the layout's path as its row spells it (the export mirrors it below the manifest's folder)

    @property
    def label(self) -> int:
        return TYPE_LABELS[self.type]


@dataclass
class Manifest:
    path: Path
    records: list[LayoutRecord]
    rows: int = 0  # data rows in the file
    format: ManifestFormat = LAYOUTS_CSV
    layouts: int = 0  # different images listed (all-in-one: what the viewpoint rows collapse into)
    dropped_empty: int = 0
    dropped_duplicates: list[int] = field(default_factory=list)  # lines of repeated rows
    skipped: list[str] = field(default_factory=list)  # why each broken row was left out (skip_broken)

    def summary(self, root: str | Path | None = None) -> str:
        """One line: rows read, layouts kept, what was dropped (the path relative to ``root``)."""
        rooms = sum(r.type == "room" for r in self.records)
        text = f"{shown_path(self.path, root)}: {self.rows} rows"
        if self.format.per_viewpoint:
            text += f" collapsed into {self.layouts} layouts (an all-in-one manifest, one row per viewpoint)"
        text += (
            f", {len(self.records)} layouts kept ({rooms} rooms, {len(self.records) - rooms} scenes), "
            f"{self.dropped_empty} empty dropped"
        )
        if self.dropped_duplicates:
            text += f", {len(self.dropped_duplicates)} duplicate rows dropped (lines {_lines(self.dropped_duplicates)})"
        if self.skipped:
            text += f", {len(self.skipped)} broken rows skipped"
        return text


def _lines(lines: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f", ... ({len(lines) - limit} more)" if len(lines) > limit else "")


def parse_bool(value: str, where: str) -> bool:
    """``is_empty`` as written by the dataset tools: true/false in any case, or 1/0."""
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ManifestError(f"{where}: is_empty = {value!r}; expected true/false/True/False/1/0")


def read_manifest(path: str | Path, drop_empty: bool = True, skip_broken: bool = False) -> Manifest:
    """Read a manifest, ``layouts.csv`` or the all-in-one format (module docstring), as one record
    per layout image. Empty layouts are dropped unless ``drop_empty`` is False.

    Rows repeating an earlier row's image with the metadata it must agree on are collapsed into it
    (counted, and in ``layouts.csv`` listed as dropped duplicates); the same image listed with
    other metadata is a broken row.
    """
    path = Path(path)
    header, rows, fmt = _read_rows(path)
    manifest = Manifest(path=path, records=[], rows=len(rows), format=fmt)
    seen: dict[Path, LayoutRecord] = {}
    # each image once: the all-in-one manifest repeats it on every viewpoint's row
    resolve = functools.cache(lambda layout_path: (path.parent / layout_path).resolve())
    for number, row in enumerate(rows, start=2):
        try:
            record = _record(row, path, number, len(header), seen, fmt, resolve)
        except ManifestError as err:
            if not skip_broken:
                raise ManifestError(f"{err}; set data.skip_broken: true to skip such rows") from None
            manifest.skipped.append(str(err))
            continue
        if record.path in seen:
            if not fmt.per_viewpoint:
                manifest.dropped_duplicates.append(number)
            continue
        seen[record.path] = record
        if record.is_empty and drop_empty:
            manifest.dropped_empty += 1
            continue
        manifest.records.append(record)
    manifest.layouts = len(seen)

    if not manifest.records:
        raise ManifestError(
            f"{path}: no layouts left after dropping {manifest.dropped_empty} empty ones"
            + (
                f" and skipping {len(manifest.skipped)} broken rows, first: {manifest.skipped[0]}"
                if manifest.skipped
                else ""
            )
        )
    return manifest


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]], ManifestFormat]:
    """The header, the data rows and the format the header shows; errors for a file that is no
    usable manifest at all."""
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            if not header:
                raise ManifestError(
                    f"{path}: the manifest is empty (expected a header with columns {', '.join(COLUMNS)}, "
                    f"or those of an all-in-one manifest: {', '.join(ALL_IN_ONE.columns.values())})"
                )
            fmt = _format(path, header)
            reader.fieldnames = header
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not a UTF-8 CSV file ({err})") from None
    if not rows:
        raise ManifestError(f"{path}: the manifest has a header but no rows")
    return header, rows, fmt


def _format(path: Path, header: list[str]) -> ManifestFormat:
    """The format whose columns the header holds; else an error naming what each format misses."""
    for fmt in FORMATS:
        if all(column in header for column in fmt.columns.values()):
            return fmt
    missing = [
        f"{', '.join(c for c in fmt.columns.values() if c not in header)} for {fmt.name} "
        f"(which needs {', '.join(fmt.columns.values())})"
        for fmt in FORMATS
    ]
    raise ManifestError(
        f"{path}: a header of neither manifest format: missing column(s) {' or '.join(missing)}; "
        f"found {', '.join(header)}"
    )


def _record(
    row: dict[str, str],
    path: Path,
    number: int,
    fields: int,
    seen: dict[Path, LayoutRecord],
    fmt: ManifestFormat,
    resolve: Callable[[str], Path],
) -> LayoutRecord:
    """One row as a record; a ManifestError naming the line and the column if the row is broken."""
    where = f"{path}, line {number}"
    column = fmt.columns
    if None in row or any(row.get(c) is None for c in fmt.columns.values()):
        raise ManifestError(f"{where}: expected {fields} fields, found a row of a different length")
    kind = row[column["type"]].strip().lower()
    if kind not in TYPE_LABELS:
        raise ManifestError(f"{where}: {column['type']} = {row[column['type']]!r}; expected 'room' or 'scene'")
    layout_path = row[column["layout_path"]].strip()
    if not layout_path:
        raise ManifestError(f"{where}: {column['layout_path']} is empty")
    record = LayoutRecord(
        line=number,
        scene_id=row[column["scene_id"]].strip(),
        type=kind,
        room_id=row[column["room_id"]].strip(),
        path=resolve(layout_path),  # relative to the manifest's folder
        is_empty=parse_bool(row[column["is_empty"]], where),
        written=layout_path,
    )
    earlier = seen.get(record.path)
    differ = [key for key in fmt.agree if getattr(earlier, key) != getattr(record, key)] if earlier else []
    if differ:
        values = "; ".join(
            f"{column[k]} {getattr(earlier, k)} on line {earlier.line}, {getattr(record, k)} on line {number}"
            for k in differ
        )
        raise ManifestError(
            f"{where}: {layout_path} is also listed on line {earlier.line} with a different "
            f"{' and '.join(column[k] for k in differ)} ({values}); the rows of one layout must agree on "
            f"{', '.join(column[k] for k in fmt.agree)}"
        )
    return record


SIDES = ("train", "val", "test")
SIDE_NAMES = {"train": "training", "val": "validation", "test": "test"}
# How layouts are grouped and groups assigned to sides. A checkpoint records it; a run trained under
# another scheme is not resumed, since its training layouts may be on another side of this split.
SPLIT_SCHEME = "scene+identical-layout groups, train/val/test (1)"


def group_layouts(records: Sequence[LayoutRecord], hashes: Sequence[str | None]) -> np.ndarray:
    """An int64 group id per record: records sharing a scene (``scene_id``) or a class-map hash
    are in one group, transitively (a scene with a room identical to another scene's room joins
    that scene's group). A record without a hash (an unreadable image) joins its scene's group
    only; one without a scene_id is grouped by its file name. Groups are numbered in the order of
    their smallest scene key, so the ids follow the content, not the order of the rows."""
    if len(hashes) != len(records):
        raise ValueError(f"{len(hashes)} hashes for {len(records)} records")
    return group_keys([_scene_key(record) for record in records], hashes)


def group_keys(scenes: Sequence[str], hashes: Sequence[str | None]) -> np.ndarray:
    """Union-find over two keys: items sharing a scene key or a (non-empty) hash are one group,
    transitively; an int64 id per item, numbered by each group's smallest scene key."""
    parent = list(range(len(scenes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, (scene, digest) in enumerate(zip(scenes, hashes)):
        for key in (f"scene:{scene}", f"layout:{digest}" if digest else None):
            if key is not None:
                a, b = root(i), root(first.setdefault(key, i))
                parent[max(a, b)] = min(a, b)
    roots = [root(i) for i in range(len(scenes))]
    names: dict[int, str] = {}
    for i, r in enumerate(roots):
        names[r] = min(names.get(r, scenes[i]), scenes[i])
    number = {name: k for k, name in enumerate(sorted(set(names.values())))}
    return np.array([number[names[r]] for r in roots], dtype=np.int64)


def _scene_key(record: LayoutRecord) -> str:
    return f"scene:{record.scene_id}" if record.scene_id else f"file:{record.path.name}"


def side_targets(layouts: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Layouts wanted on (train, val, test): the fractions rounded, at least one on each side."""
    val = max(1, round(layouts * val_fraction))
    test = max(1, round(layouts * test_fraction))
    return np.array([layouts - val - test, val, test], dtype=np.int64)


def assign_sides(groups: np.ndarray, val_fraction: float, test_fraction: float, split_seed: int) -> np.ndarray:
    """The side of each layout (an index into ``SIDES``), whole groups at a time.

    Groups are taken in an order drawn from ``split_seed``; each goes to the side furthest below
    its target, so no side passes its target by a group or more, and sides fill in proportion
    (a large group is not pushed to whichever side happens to be filled last). When only as many
    groups are left as sides are still empty, they go to the empty sides: with 3 groups or more,
    no side is empty. The same groups and seed give the same sides on any machine."""
    sizes = np.bincount(groups)
    targets = side_targets(int(sizes.sum()), val_fraction, test_fraction)
    counts = np.zeros(len(SIDES), dtype=np.int64)
    side_of_group = np.empty(len(sizes), dtype=np.int64)
    everywhere = np.arange(len(SIDES))
    for placed, group in enumerate(np.random.default_rng(split_seed).permutation(len(sizes))):
        empty = np.flatnonzero(counts == 0)
        candidates = empty if len(sizes) - placed <= len(empty) else everywhere
        side = candidates[np.argmax((targets - counts)[candidates])]
        side_of_group[group] = side
        counts[side] += sizes[group]
    return side_of_group[groups]


@dataclass(frozen=True)
class Split:
    """Each record's group and side (index into ``SIDES``), in the order of ``records``."""

    records: list[LayoutRecord]
    groups: np.ndarray  # int64 (N,)
    sides: np.ndarray  # int64 (N,)

    def side(self, name: str) -> list[LayoutRecord]:
        wanted = SIDES.index(name)
        return [r for r, s in zip(self.records, self.sides) if s == wanted]


def split_records(
    records: Sequence[LayoutRecord],
    hashes: Sequence[str | None] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 42,
    source: str | Path = "",
) -> Split:
    """Deterministic split into train, validation and test by group (``group_layouts``): a room
    layout is a crop of its scene's, and an identical layout under another scene is the same
    image, so either on two sides would put training images in the held-out sets. ``hashes``
    (``palette.class_map_hash`` per record; None: group by scene only) come from the decoded
    cache. The same seed and manifest give the same split on any machine and in any row order.
    ``source`` (the manifest) names the data in errors."""
    hashes = list(hashes) if hashes is not None else [None] * len(records)
    where = f"{source}: " if source else ""
    groups = group_layouts(records, hashes)
    count = int(groups.max()) + 1 if len(groups) else 0
    if count < len(SIDES):
        raise ManifestError(
            f"{where}the {len(records)} layouts form {count} group(s) (a scene with its rooms, joined with every "
            f"scene sharing an identical layout); a split into training, validation and test needs at least "
            f"{len(SIDES)} groups"
        )
    return Split(list(records), groups, assign_sides(groups, val_fraction, test_fraction, split_seed))


@dataclass
class SplitFigures:
    """What the split did with the duplicates, for the log and ``split_summary.json``."""

    scheme: str
    split_seed: int
    val_fraction: float
    test_fraction: float
    layouts: dict[str, int]  # per side
    groups_per_side: dict[str, int]
    groups: int
    largest_group: int  # layouts in the largest group
    distinct_layouts: int  # different class maps
    identical_layouts: int  # layouts identical to another one counted before them (layouts - distinct)
    layouts_with_twin: int  # layouts that have at least one identical twin
    duplicate_rate: float  # layouts_with_twin / layouts
    identical_sets: int  # class maps that occur more than once
    identical_across_sides: int  # of those, the ones on more than one side (0 by construction)

    def lines(self) -> list[str]:
        total = sum(self.layouts.values())
        sides = ", ".join(
            f"{SIDE_NAMES[s]} {n} ({n / max(total, 1):.1%}, {self.groups_per_side[s]} groups)"
            for s, n in self.layouts.items()
        )
        return [
            f"split by group (a scene with its rooms, joined with every scene sharing an identical layout; "
            f"seed {self.split_seed}): {sides}",
            f"{self.identical_layouts} identical layouts (copies of another layout; {self.layouts_with_twin} layouts, "
            f"{self.duplicate_rate:.1%}, have an identical twin, in {self.identical_sets} sets); "
            f"{self.groups} groups, the largest {self.largest_group} layouts; "
            f"identical layouts on two sides: {self.identical_across_sides}",
        ]


def split_figures(
    hashes: Sequence[str], groups: np.ndarray, sides: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> SplitFigures:
    """The duplicate figures of a split, over the layouts given (each with its hash, group, side)."""
    hashes = np.asarray(hashes)
    _, inverse, copies = np.unique(hashes, return_inverse=True, return_counts=True)
    twins = copies[inverse] > 1
    sides_per_set = {(h, s) for h, s in zip(inverse[twins].tolist(), np.asarray(sides)[twins].tolist())}
    spread = np.bincount([h for h, _ in sides_per_set], minlength=len(copies))
    group_sizes = np.bincount(groups) if len(groups) else np.zeros(0, dtype=np.int64)
    return SplitFigures(
        scheme=SPLIT_SCHEME,
        split_seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        layouts={s: int(np.sum(sides == k)) for k, s in enumerate(SIDES)},
        groups_per_side={s: len(np.unique(groups[sides == k])) for k, s in enumerate(SIDES)},
        groups=int(np.count_nonzero(group_sizes)),
        largest_group=int(group_sizes.max(initial=0)),
        distinct_layouts=len(copies),
        identical_layouts=int(len(hashes) - len(copies)),
        layouts_with_twin=int(twins.sum()),
        duplicate_rate=float(twins.mean()) if len(hashes) else 0.0,
        identical_sets=int(np.sum(copies > 1)),
        identical_across_sides=int(np.sum(spread > 1)),
    )
