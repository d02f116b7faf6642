"""Kill points: where the fault-injection tests kill a run, as a batch system's ``kill -9`` would.

With ``IMGINAV_KILL_AT=POINT`` (or ``POINT@N``) set, the process sends itself SIGKILL the first
(or the Nth) time it reaches ``POINT``; the test then runs the same command again and checks the
run ends as an uninterrupted one. The points:

    train_step      an optimisation step has just been taken
    evaluate        a validation batch has just been evaluated
    write:NAME      an atomic write of a file called NAME has created its temporary file (empty)
    written:NAME    ... has written the temporary file whole, and not yet renamed it

Without the variable (always, outside the tests) ``kill_point`` does nothing.
"""

from __future__ import annotations

import collections
import os
import signal


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
