"""Whole-or-nothing file writes: write under a temporary name in the same folder, then rename.

A job killed mid-write leaves at most a stray temporary file ``.NAME.<random>.tmp``, never a
truncated output that a later step would read as if it were complete. Nothing reads those
temporaries; a run that starts again removes the ones its own outputs left
(``remove_leftovers``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from .faults import kill_point

_UMASK = os.umask(0)
os.umask(_UMASK)
# ".NAME." + mkstemp's random part (letters, digits, "_"; never a dot) + ".tmp"
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]+\.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file private (0600); give the output the usual permissions so
    # colleagues reading a shared phase folder can open it.
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        kill_point(f"write:{path.name}")
        yield tmp_path
        kill_point(f"written:{path.name}")
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_leftovers(folder: str | Path, names: str = ".+") -> int:
    """Delete the temporaries in ``folder`` that writers killed mid-write left behind, of outputs
    whose file name fully matches the regular expression ``names``; returns how many.

    Only for outputs no other running process writes (a run's own, under its run lock): another
    writer's temporary would be deleted under its feet.
    """
    wanted = re.compile(names)
    removed = 0
    for candidate in Path(folder).glob(".*.tmp"):
        match = _TEMPORARY.fullmatch(candidate.name)
        if match and wanted.fullmatch(match["name"]):
            candidate.unlink(missing_ok=True)
            removed += 1
    return removed
