"""The peak resident memory of every process a command starts, as a batch system would see them.

    python -m imginav_core.study.perf.peaks --json peaks.json -- bash hpc/demo.sh

Runs the command and, every ``--interval`` seconds until it ends, reads ``/proc/PID/status`` of
each of its descendants: ``VmHWM``, the process's own peak resident size since it started (LSF's
-M limits each process's resident size, per slot). A process is listed under the job it belongs
to: the command's child it descends from (``bash hpc/phase1_2_array.sh`` with its
``LSB_JOBINDEX``, ``bash hpc/diffusion_probe.sh``, ...). A process's peak is its last reading:
a peak reached in the last interval before it exits can be missed. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ...files import write_text_atomic

PROC = Path("/proc")


@dataclass
class ProcessPeak:
    pid: int
    job: str  # the command line of the command's child this process descends from
    command: str
    peak_bytes: int  # VmHWM at the last reading


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(PROC / str(pid) / "status") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may hold spaces: the fields follow its ")"
        found[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return found


def _command(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    words = raw.rstrip(b"\0").split(b"\0")
    return " ".join(w.decode(errors="replace") for w in words)[:200]


def _job_index(pid: int) -> str:
    try:
        environment = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    for item in environment:
        if item.startswith(b"LSB_JOBINDEX="):
            return item.split(b"=", 1)[1].decode()
    return ""


def watch(command: list[str], interval: float = 0.5) -> tuple[int, list[ProcessPeak]]:
    """Run ``command``; (its exit status, the peak of every process it started, the command's own first)."""
    child = subprocess.Popen(command)
    peaks: dict[int, ProcessPeak] = {}
    while True:
        parents = _parents()
        jobs = {child.pid: ""}  # the command itself; its children name the jobs
        changed = True
        while changed:  # descendants, whatever order /proc lists them in
            changed = False
            for pid, parent in parents.items():
                if pid not in jobs and parent in jobs:
                    if parent == child.pid:
                        index = _job_index(pid)
                        jobs[pid] = (f"LSB_JOBINDEX={index} " if index else "") + _command(pid)
                    else:
                        jobs[pid] = jobs[parent]
                    changed = True
        for pid, job in jobs.items():
            peak = _status_kb(pid, "VmHWM:")
            if peak is None:
                continue
            known = peaks.setdefault(pid, ProcessPeak(pid, "", "", 0))
            # named again at each reading: a process first seen between fork and exec changes its command
            known.job, known.command = job or "(the command itself)", _command(pid)
            known.peak_bytes = max(known.peak_bytes, peak * 1024)
        if child.poll() is not None:
            return child.returncode, list(peaks.values())
        time.sleep(interval)


def by_job(peaks: list[ProcessPeak]) -> dict[str, ProcessPeak]:
    """The largest process of each job."""
    largest: dict[str, ProcessPeak] = {}
    for peak in peaks:
        if peak.job not in largest or peak.peak_bytes > largest[peak.job].peak_bytes:
            largest[peak.job] = peak
    return largest


def table(peaks: list[ProcessPeak]) -> str:
    lines = ["peak resident size (VmHWM) of the largest process of each job:", ""]
    lines += [f"{'GB':>6}  job  <-  its largest process"]
    for job, peak in by_job(peaks).items():
        lines.append(f"{peak.peak_bytes / 1e9:>6.2f}  {job[:90]}  <-  {peak.command[:110]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imginav_core.study.perf.peaks",
        description="Run a command and record the peak resident memory (VmHWM) of every process it starts.",
        epilog="example:\n  python -m imginav_core.study.perf.peaks --json peaks.json -- bash hpc/demo.sh",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", type=Path, help="write every process's peak here")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between readings (default 0.5)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to watch after --")
    if not PROC.is_dir():
        parser.error("needs Linux's /proc")
    status, peaks = watch(command, args.interval)
    print("\n" + table(peaks), flush=True)
    if args.json:
        report = {"command": command, "exit_status": status, "processes": [asdict(p) for p in peaks]}
        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
