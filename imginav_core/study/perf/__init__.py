"""How fast training runs: the benchmark (``bench``), where a step's time goes (``profile``) and
how long the whole phase takes (``phase_timing``). The figures and how to read them: README.md
beside this file."""

import time

STARTED = time.perf_counter()


def log(message: str) -> None:
    """A progress line with the seconds since start, flushed so that a captured log shows it at once."""
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", flush=True)
