"""Reader for the real ``layouts.csv`` manifest and the deterministic train/validation split.

Columns: ``scene_id, type, room_id, layout_path, is_empty`` (others are ignored).
Relative ``layout_path`` values resolve against the manifest's own folder, so a dataset folder
can be moved or copied as a whole. Errors name the file and the line. A broken row (unknown
``type``, unreadable ``is_empty``, no ``layout_path``, wrong number of fields, the same image
listed twice with different metadata) stops the reader, or with ``skip_broken`` is left out
and listed in ``Manifest.skipped``; a broken file (missing, empty, a missing column) always stops it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ManifestError
from ..outputs import shown_path

COLUMNS = ("scene_id", "type", "room_id", "layout_path", "is_empty")
TYPE_LABELS = {"room": 0, "scene": 1}
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


@dataclass(frozen=True)
class LayoutRecord:
    line: int  # line in the manifest file (the header is line 1), for messages
    scene_id: str
    type: str  # "room" or "scene"
    room_id: str
    path: Path  # resolved
    is_empty: bool

    @property
    def label(self) -> int:
        return TYPE_LABELS[self.type]


@dataclass
class Manifest:
    path: Path
    records: list[LayoutRecord]
    rows: int = 0  # data rows in the file
    dropped_empty: int = 0
    dropped_duplicates: list[int] = field(default_factory=list)  # lines of repeated rows
    skipped: list[str] = field(default_factory=list)  # why each broken row was left out (skip_broken)

    def summary(self, root: str | Path | None = None) -> str:
        """One line: rows read, layouts kept, what was dropped (the path relative to ``root``)."""
        rooms = sum(r.type == "room" for r in self.records)
        text = (
            f"{shown_path(self.path, root)}: {self.rows} rows, {len(self.records)} layouts kept "
            f"({rooms} rooms, {len(self.records) - rooms} scenes), {self.dropped_empty} empty dropped"
        )
        if self.dropped_duplicates:
            text += f", {len(self.dropped_duplicates)} duplicate rows dropped (lines {_lines(self.dropped_duplicates)})"
        if self.skipped:
            text += f", {len(self.skipped)} broken rows skipped"
        return text


def _lines(lines: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f", ... ({len(lines) - limit} more)" if len(lines) > limit else "")


def parse_bool(value: object, where: str) -> bool:
    """``is_empty`` as written by the dataset tools: true/false in any case, 1/0, or a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ManifestError(f"{where}: is_empty = {value!r}; expected true/false/True/False/1/0")


def read_manifest(path: str | Path, drop_empty: bool = True, skip_broken: bool = False) -> Manifest:
    """Read ``layouts.csv``. Empty layouts are dropped unless ``drop_empty`` is False.

    Rows repeating an earlier row's ``layout_path`` with the same metadata are dropped (and
    counted); the same image listed with a different type or emptiness is a broken row.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    manifest = Manifest(path=path, records=[], rows=len(rows))
    seen: dict[Path, LayoutRecord] = {}
    for number, row in enumerate(rows, start=2):
        try:
            record = _record(row, path, number, len(header), seen)
        except ManifestError as err:
            if not skip_broken:
                raise ManifestError(f"{err}; set data.skip_broken: true to skip such rows") from None
            manifest.skipped.append(str(err))
            continue
        if record.path in seen:
            manifest.dropped_duplicates.append(number)
            continue
        seen[record.path] = record
        if record.is_empty and drop_empty:
            manifest.dropped_empty += 1
            continue
        manifest.records.append(record)

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


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the data rows; errors for a file that is no usable manifest at all."""
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            if not header:
                raise ManifestError(
                    f"{path}: the manifest is empty (expected a header with columns {', '.join(COLUMNS)})"
                )
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise ManifestError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}, "
                    f"found {', '.join(header)}"
                )
            reader.fieldnames = header
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not a UTF-8 CSV file ({err})") from None
    if not rows:
        raise ManifestError(f"{path}: the manifest has a header but no rows")
    return header, rows


def _record(row: dict[str, str], path: Path, number: int, fields: int, seen: dict[Path, LayoutRecord]) -> LayoutRecord:
    """One row as a record; a ManifestError naming the line if the row is broken."""
    where = f"{path}, line {number}"
    if None in row or any(row.get(c) is None for c in COLUMNS):
        raise ManifestError(f"{where}: expected {fields} fields, found a row of a different length")
    kind = row["type"].strip().lower()
    if kind not in TYPE_LABELS:
        raise ManifestError(f"{where}: type = {row['type']!r}; expected 'room' or 'scene'")
    layout_path = row["layout_path"].strip()
    if not layout_path:
        raise ManifestError(f"{where}: layout_path is empty")
    record = LayoutRecord(
        line=number,
        scene_id=row["scene_id"].strip(),
        type=kind,
        room_id=row["room_id"].strip(),
        path=(path.parent / layout_path).resolve(),
        is_empty=parse_bool(row["is_empty"], where),
    )
    earlier = seen.get(record.path)
    if earlier is not None and (earlier.type, earlier.is_empty) != (record.type, record.is_empty):
        raise ManifestError(
            f"{where}: {layout_path} is also listed on line {earlier.line} with a different "
            f"type or is_empty ({earlier.type}/{earlier.is_empty} vs {record.type}/{record.is_empty})"
        )
    return record


def split_records(
    records: list[LayoutRecord], val_fraction: float = 0.2, split_seed: int = 42
) -> tuple[list[LayoutRecord], list[LayoutRecord]]:
    """Deterministic split into (train, validation) by scene: a room layout is a crop of its
    scene's, so a scene and its rooms (one ``scene_id``) always land on the same side, or the
    validation set would hold crops of training images. Whole scenes, in an order drawn from
    ``split_seed``, go to validation until it holds ``val_fraction`` of the layouts. The same seed
    and manifest give the same split on any machine and in any row order. A row without a
    scene_id is a group of its own."""
    if len(records) < 2:
        raise ManifestError(f"need at least 2 layouts to split into train and validation, have {len(records)}")
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.scene_id or f"{r.path.name}@{r.line}", []).append(i)
    if len(groups) < 2:
        raise ManifestError(
            f"all {len(records)} layouts belong to scene {records[0].scene_id!r}; a split by scene "
            "needs at least 2 scenes"
        )
    names = sorted(groups)
    target = min(max(1, round(len(records) * val_fraction)), len(records) - 1)
    val: list[int] = []
    for k in np.random.default_rng(split_seed).permutation(len(names)):
        members = groups[names[k]]
        if len(val) >= target or len(val) + len(members) == len(records):
            continue  # enough, or this scene would leave no training layout
        val += members
    chosen = set(val)
    return ([r for i, r in enumerate(records) if i not in chosen], [r for i, r in enumerate(records) if i in chosen])
