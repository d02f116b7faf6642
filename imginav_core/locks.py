"""Advisory lock files (``flock``; released when the holder exits, however it dies).

``file_lock`` makes jobs sharing an output folder (V1 and V2 at once) build shared things (the
synthetic set, the decoded cache) once instead of racing; ``exclusive_lock`` keeps a second
copy of the same experiment (a job resubmitted while the first still runs) out of its run folder.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator


class LockHeldError(RuntimeError):
    """Another process holds the lock."""


@contextlib.contextmanager
def _flock(path: str | Path, wait: bool) -> Iterator[None]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(f"{path} is locked by another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def file_lock(path: str | Path) -> contextlib.AbstractContextManager[None]:
    """Wait for the lock and hold it for the ``with`` block."""
    return _flock(path, wait=True)


def exclusive_lock(path: str | Path) -> contextlib.AbstractContextManager[None]:
    """Hold the lock for the ``with`` block, or raise ``LockHeldError`` at once if it is taken."""
    return _flock(path, wait=False)
