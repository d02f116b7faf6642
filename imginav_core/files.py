"""Files that survive a ``kill -9``: whole-or-nothing writes, locks between jobs sharing an
output folder, and the kill points where the fault-injection tests kill a run.

**Whole or nothing.** A file is written under a temporary name in its own folder, then renamed.
A job killed mid-write leaves at most a stray temporary ``.NAME.<random>.tmp``, never a truncated
output a later step would read as complete. Nothing reads those temporaries; a run that starts
again removes the ones its own outputs left (``remove_leftovers``). A folder shared by jobs (the
synthetic set, the decoded cache) is built the same way: in a staging folder, renamed into place
(``build_folder``).

**Locks.** ``file_lock`` makes jobs sharing an output folder (V1 and V2 at once) build shared
things (the synthetic set, the decoded cache) once instead of racing; ``exclusive_lock`` keeps a
second copy of the same experiment (a job resubmitted while the first still runs) out of its run
folder. They are POSIX record locks (``lockf``), not ``flock``: such a lock belongs to the process
that took it, so the decoding workers it forks do not inherit it, and it is released the moment
that process dies, however it dies, even while an orphaned worker lingers (with ``flock`` that
worker would keep the lock and refuse the rerun of a killed job). They also work on NFS. A
process never conflicts with its own lock: hold each lock once per process.

**Kill points.** With ``IMGINAV_KILL_AT=POINT`` (or ``POINT@N``) set, the process sends itself
SIGKILL the first (or the Nth) time it reaches ``POINT``, as a batch system's ``kill -9`` would;
the test then runs the same command again and checks the run ends as an uninterrupted one:

    train_step      an optimisation step has just been taken
    evaluate        a validation batch has just been evaluated
    write:NAME      a whole-or-nothing write of a file called NAME has created its temporary (empty)
    written:NAME    ... has written the temporary whole, and not yet renamed it

Without the variable (always, outside the tests) ``kill_point`` does nothing.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import errno
import fcntl
import io
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

# ---- kill points ---------------------------------------------------------------------------------


def _target(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    point, at, nth = spec.rpartition("@")
    return (point, int(nth)) if at else (spec, 1)


_TARGET = _target(os.environ.get("IMGINAV_KILL_AT", ""))
_arrivals: collections.Counter[str] = collections.Counter()


def kill_point(point: str) -> None:
    if _TARGET is None or point != _TARGET[0]:
        return
    _arrivals[point] += 1
    if _arrivals[point] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)


# ---- whole-or-nothing writes -----------------------------------------------------------------------

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


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A CSV file's text: the header, then the rows, each line ending in a plain newline."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


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


# ---- locks ---------------------------------------------------------------------------------------------


class LockHeldError(RuntimeError):
    """Another process holds the lock."""


@contextlib.contextmanager
def _lock(path: str | Path, wait: bool) -> Iterator[None]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:  # lockf needs a file open for writing
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise LockHeldError(f"{path} is locked by another process") from None
        try:
            yield
        finally:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_UN)


def file_lock(path: str | Path) -> contextlib.AbstractContextManager[None]:
    """Wait for the lock and hold it for the ``with`` block."""
    return _lock(path, wait=True)


def exclusive_lock(path: str | Path) -> contextlib.AbstractContextManager[None]:
    """Hold the lock for the ``with`` block, or raise ``LockHeldError`` at once if it is taken."""
    return _lock(path, wait=False)


def build_folder(folder: Path, built: Callable[[], bool], build: Callable[[Path], None]) -> None:
    """Make ``folder`` appear whole or not at all, built once by the jobs that share it: under a
    lock beside it, unless ``built()`` says it is there, ``build(staging)`` fills a staging folder
    beside it, which is renamed into place (over what an interrupted older attempt left)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if built():
            return
        staging = folder.parent / f".{folder.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            build(staging)
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in blocks: what identifies a checkpoint wherever it is
    copied (its modification time does not survive ``cp -r``)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
