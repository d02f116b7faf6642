"""The analysis notebook's first step: each arm's runs, as the study's plan names them, with what
is unfinished about any of them (compared only with ``allow_unfinished``, and then marked)."""

from __future__ import annotations

import html
from dataclasses import dataclass

from ...outputs import Outputs
from ..plan import StudyPlan
from ..runs import RunSummary, load_runs
from .plots import run_label


@dataclass(frozen=True)
class LoadedArms:
    arms: dict[str, list[RunSummary]]  # arm -> its runs, in the plan's order
    unfinished: list[str]  # why each unfinished run compared is unfinished (``runs.require_finished``)

    @property
    def runs(self) -> list[RunSummary]:
        """Every compared run, arm by arm."""
        return [run for runs in self.arms.values() for run in runs]

    def banners(self) -> list[str]:
        """An HTML banner for each unfinished run compared: its numbers are not those of a complete run."""
        return [
            f"<div style='border:2px solid #e41a1c;padding:6px'><b>UNFINISHED RUN</b> — {html.escape(warning)}. "
            "Its numbers below are not those of a complete run.</div>"
            for warning in self.unfinished
        ]

    def listing(self) -> str:
        """One line per run: its arm and seed, name, status and epochs trained."""
        return "\n".join(f"{run_label(run)}: {run.name}, {run.status}, {run.epochs_run} epochs" for run in self.runs)


def load_arms(out: Outputs, arms: dict[str, list[str]], allow_unfinished: bool = False) -> LoadedArms:
    """Each arm's runs (``arms``: label -> run names, the plan's); an ``UnfinishedRunError`` for an
    unfinished one unless ``allow_unfinished``. It reads files and changes nothing, so running it
    again loads the same runs."""
    loaded, unfinished = {}, []
    for label, names in arms.items():
        loaded[label], why = load_runs(out, names, allow_unfinished)
        unfinished += why
    return LoadedArms(loaded, unfinished)


@dataclass
class AnalysisInputs:
    plan: StudyPlan
    arms: LoadedArms  # each arm's runs
    job: bool  # write the study's results and decision (the analysis job); else write nothing
    allow_unfinished: bool
    allow_no_probe: bool

    @property
    def out(self) -> Outputs:
        return self.plan.outputs
