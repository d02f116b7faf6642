"""How fast training runs: the benchmark (``bench``), where a step's time goes (``profile``); what
each job's process costs and how long the whole phase's training takes (``memory``, from what the
stages record). The figures and how to read them: README.md beside this file."""

import time

STARTED = time.perf_counter()


def log(message: str) -> None:
    """A progress line with the seconds since start, flushed so that a captured log shows it at once."""
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", flush=True)
