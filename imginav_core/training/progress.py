"""A per-epoch progress bar that reads well live in a terminal, in a notebook, and in a batch
job's log file.

In a terminal it is the usual self-updating bar. Anywhere else (a papermill-executed notebook,
an LSF log) the output is not a terminal, and carriage-return redraws would pile up into
thousands of fragments; there the bar prints about ten plain lines per epoch instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO, TypeVar

from tqdm.auto import tqdm as _tqdm_auto
from tqdm.std import tqdm as _tqdm_text

T = TypeVar("T")
UPDATES_PER_EPOCH = 10


class _Lines:
    """Turns tqdm's ``\\r`` redraws into whole lines."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def in_interactive_notebook() -> bool:
    """A kernel with a front end attached (papermill runs a kernel too, but stdin is off)."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        return False
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    kernel = getattr(shell, "kernel", None)
    return bool(getattr(kernel, "_allow_stdin", False))


def progress(iterable: Iterable[T], total: int, desc: str, enabled: bool = True) -> Iterable[T]:
    if not enabled:
        return iterable
    if sys.stdout.isatty():
        return _tqdm_text(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False, file=sys.stdout)
    if in_interactive_notebook():
        return _tqdm_auto(iterable, total=total, desc=desc, leave=False)
    return _tqdm_text(
        iterable,
        total=total,
        desc=desc,
        file=_Lines(sys.stdout),
        ncols=100,
        ascii=True,
        leave=False,  # the last progress line is already printed; no repeat on close
        delay=1e-6,  # no "0%" line before the first step
        mininterval=0,
        maxinterval=float("inf"),  # else tqdm's monitor resets miniters to 1 on slow steps
        miniters=max(1, total // UPDATES_PER_EPOCH),
    )
