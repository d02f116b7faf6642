"""Progress bars that read well live in a terminal, in a notebook, and in a batch job's log file.

In a terminal it is the usual self-updating bar; in Jupyter with a front end, tqdm's notebook bar.
Anywhere else (a papermill-executed notebook, an LSF log) the output is not a terminal, and
carriage-return redraws would pile up into thousands of fragments; there the bar prints a few
plain lines instead (``updates`` of them: about ten per training epoch, four per run the analysis
measures). ``progress`` wraps a loop; ``progress_bar`` is moved by hand (``bar.update(n)``, then
``bar.close()``) where the work is spread over several loops.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO, TypeVar

from tqdm.auto import tqdm as _tqdm_auto
from tqdm.std import tqdm as _tqdm_text

T = TypeVar("T")
UPDATES_PER_EPOCH = 10


class _LogBar(_tqdm_text):
    """A bar for log files: a line every ``miniters`` steps, and the final count when it closes."""

    def close(self) -> None:
        if not self.disable and self.n != self.last_print_n:
            self.refresh()  # the last steps since the previous line: the bar ends at its total
        super().close()


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


def progress_bar(
    total: int, desc: str, enabled: bool = True, updates: int = UPDATES_PER_EPOCH, iterable: Iterable | None = None
) -> _tqdm_text:
    """A bar over ``total`` steps (of ``iterable`` when given), drawn as this output reads best;
    ``enabled`` False: one that draws nothing (the other ranks of a data-parallel run)."""
    if not enabled:
        return _tqdm_text(iterable, total=total, disable=True)
    if sys.stdout.isatty():
        return _tqdm_text(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False, file=sys.stdout)
    if in_interactive_notebook():
        return _tqdm_auto(iterable, total=total, desc=desc, leave=False)
    return _LogBar(
        iterable,
        total=total,
        desc=desc,
        file=_Lines(sys.stdout),
        ncols=100,
        ascii=True,
        leave=False,  # the last progress line is printed by close(); no repeat
        delay=1e-6,  # no "0%" line before the first step
        mininterval=0,
        maxinterval=float("inf"),  # else tqdm's monitor resets miniters to 1 on slow steps
        miniters=max(1, -(-total // max(1, updates))),  # at most `updates` lines
    )


def progress(iterable: Iterable[T], total: int, desc: str, enabled: bool = True) -> Iterable[T]:
    """``iterable`` with a progress bar (see ``progress_bar``)."""
    if not enabled:
        return iterable
    return progress_bar(total, desc, iterable=iterable)
