"""Advisory lock files, so jobs sharing an output folder do not race.

``file_lock`` makes jobs sharing an output folder (V1 and V2 at once) build shared things (the
synthetic set, the decoded cache) once instead of racing; ``exclusive_lock`` keeps a second
copy of the same experiment (a job resubmitted while the first still runs) out of its run folder.

They are POSIX record locks (``lockf``), not ``flock``: such a lock belongs to the process that
took it, so the decoding workers it forks do not inherit it, and it is released
the moment that process dies, however it dies, even while an orphaned worker lingers (with
``flock`` that worker would keep the lock and refuse the rerun of a killed job). They also work
on NFS. A process never conflicts with its own lock: hold each lock once per process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
from pathlib import Path
from typing import Iterator


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
