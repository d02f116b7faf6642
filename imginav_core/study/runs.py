"""Finished training runs as the probe and the analysis see them: metrics history, status, best
checkpoint, and the data configuration they share.

A run counts as finished when its metrics CSV ends in ``completed`` (all configured epochs) or
``early_stopped`` (the early-stopping record) and its ``best.pt`` exists. Anything else — a job
killed by the wall-time limit, a non-finite loss, a missing checkpoint — is unfinished, and the
analysis refuses to compare it unless told to, in which case the report marks it. A run of the
study plan that is not compared at all is named with why (``missing_runs``), never dropped silently.

Below ``probe`` and ``analysis`` (both read runs). Torch-free: a run's configuration comes from its
``config.yaml`` (``_run_config``), and pandas is imported only when a run is there to read, so the
command line's checks answer on a login node in about a second.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config, config_from_dict, is_folder_name, load_config
from ..errors import ConfigError, ImginavError, UnfinishedRunError
from ..outputs import Outputs

if TYPE_CHECKING:
    import pandas as pd

FINISHED = ("completed", "early_stopped")
# What must agree between two runs for their comparison to be fair.
SAME_DATA_KEYS = (
    "data.manifest",
    "data.resolution",
    "data.synthetic_samples",
    "data.synthetic_seed",
    "data.val_fraction",
    "data.test_fraction",
    "data.split_seed",
    "data.drop_empty",
)


@dataclass
class RunSummary:
    name: str
    outputs: Outputs  # where the run's files are
    config: Config
    metrics: pd.DataFrame  # one row per epoch, the columns of the metrics CSV
    status: str
    problem: str  # "" for a finished run, else why it is not

    @property
    def finished(self) -> bool:
        return not self.problem

    @property
    def best_checkpoint(self) -> Path:
        """The early-stopping best: the weights the analysis measures."""
        return self.outputs.best_checkpoint(self.name)

    @property
    def epochs_run(self) -> int:
        return int(self.metrics["epoch"].max()) if len(self.metrics) else 0

    @property
    def best_epoch(self) -> int:
        best = self.metrics[self.metrics["is_best"] == 1]
        return int(best["epoch"].iloc[-1]) if len(best) else 0

    @property
    def selection_column(self) -> str:
        """The metrics column that picked its best epoch: ``val_reconstruction``, or ``val_total`` for
        a run of older code (its config's documented default, ``config.defaults_note``)."""
        return f"val_{self.config.training.early_stopping.monitor}"

    @property
    def best_row(self) -> pd.Series:
        return self.metrics[self.metrics["epoch"] == self.best_epoch].iloc[0]

    @property
    def minutes(self) -> float:
        return float(self.metrics["epoch_seconds"].sum()) / 60.0

    @property
    def images_per_s(self) -> float:
        return float(self.metrics["train_images_per_s"].median())

    def split_line(self) -> str:
        """The run's split as it recorded it (``split_summary.json``): each side's layouts and share."""
        import json

        from ..data.manifest import SplitFigures

        path = self.outputs.split_summary(self.name)
        if not path.is_file():
            return f"{self.name}: no split_summary.json (a run written by earlier code)"
        return SplitFigures(**json.loads(path.read_text())).lines()[0]

    @property
    def label(self) -> str:
        """Short label for figures: V1 / V2 from the experiment name, else the name."""
        for part in self.name.split("_"):
            if len(part) >= 2 and part[0] == "V" and part[1:].isdigit():
                return part
        return self.name


def load_run(out: Outputs, name: str) -> RunSummary:
    """Read experiment ``name`` under the output root of ``out``; never raises for an unfinished
    run (see ``problem``), only for one that cannot be read at all."""
    if not is_folder_name(name):
        raise ConfigError(f"experiment name {name!r}: use only letters, digits, '_', '-' and '.'")
    metrics_path = out.metrics_csv(name)
    if not metrics_path.is_file():
        raise UnfinishedRunError(
            f"no metrics for experiment {name!r}: {metrics_path} does not exist (was it trained with "
            f"output_root={out.root}? did its job fail before the first epoch? see hpc/logs/)"
        )
    import pandas as pd  # (pandas: only once there is a run to read)

    with open(metrics_path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle)]
    metrics = pd.DataFrame(rows)
    metrics = metrics.apply(lambda col: pd.to_numeric(col, errors="coerce") if col.name != "status" else col)
    status = str(metrics["status"].iloc[-1]) if len(metrics) else "empty"
    finished_rows = metrics[metrics["status"].isin(FINISHED + ("running",))]

    best = out.best_checkpoint(name)
    config = _run_config(out, name)

    problem = ""
    if status not in FINISHED:
        problem = (
            f"stopped after {len(finished_rows)} of {config.training.epochs} epochs without an "
            f"early-stopping record (last status: {status})"
        )
    elif not best.is_file():
        problem = f"{best} is missing"
    return RunSummary(name, out, config, finished_rows.reset_index(drop=True), status, problem)


def _run_config(out: Outputs, name: str) -> Config:
    """The configuration the run trained with: its ``config.yaml``, written at the start of every
    training session before any checkpoint of that session. A resumption may change only where
    and how fast the run goes (``RESUMABLE_CHANGES``: the epochs, the device, a moved data
    folder), so it agrees with the checkpoints' on everything the analysis compares, and is the
    newer on those keys. Read from the checkpoint (torch) only for a run folder without it."""
    path = out.run_config(name)
    if path.is_file():  # its relative paths are relative to the run folder, wherever it was copied
        return load_config(path)
    from ..training.checkpoints import load_checkpoint

    best = out.best_checkpoint(name)
    source = best if best.is_file() else out.last_checkpoint(name)
    return config_from_dict(load_checkpoint(source)["config"], source=str(source))


def shared_config(runs: list[RunSummary], output_root: str | Path) -> Config:
    """The data configuration every run trained on (refuses runs trained on different data)."""
    base = runs[0].config
    for run in runs[1:]:
        differ = [k for k in SAME_DATA_KEYS if run.config.get(k) != base.get(k)]
        if differ:
            detail = ", ".join(f"{k}: {base.get(k)!r} vs {run.config.get(k)!r}" for k in differ)
            raise ValueError(
                f"{runs[0].name} and {run.name} were trained on different data ({detail}); "
                "they cannot be compared on one test set"
            )
    return config_from_dict(base.to_dict(), {"output_root": str(output_root), "data.num_workers": 0})


def require_finished(runs: list[RunSummary], allow_unfinished: bool = False) -> list[str]:
    """Raise ``UnfinishedRunError`` naming each unfinished run, or with ``allow_unfinished``
    return the warnings the report must show."""
    problems = [f"{run.name}: {run.problem}" for run in runs if not run.finished]
    if problems and not allow_unfinished:
        raise UnfinishedRunError(
            "refusing to compare unfinished runs: "
            + "; ".join(problems)
            + " (resubmit its training job, e.g. `bsub < hpc/papermill_V1.sh`, which resumes from last.pt, then "
            "the analysis; or set allow_unfinished=True to analyse them marked as unfinished)"
        )
    return problems


def load_runs(out: Outputs, names: list[str], allow_unfinished: bool = False) -> tuple[list[RunSummary], list[str]]:
    """The runs to compare and the warnings about unfinished ones (see ``require_finished``)."""
    runs = [load_run(out, name) for name in names]
    return runs, require_finished(runs, allow_unfinished)


@dataclass(frozen=True)
class MissingRun:
    """A run of the study plan that the comparison lacks, and why."""

    name: str
    arm: str
    why: str  # "not found" | "unfinished" | "left out by the parameters"
    detail: str

    def shown(self) -> str:
        return f"{self.name} ({self.why}: {self.detail})"


def missing_runs(
    out: Outputs, planned: dict[str, list[str]], compared: dict[str, list[RunSummary]]
) -> list[MissingRun]:
    """Each planned run (``planned``: arm -> run names, the study plan's) that ``compared`` lacks:
    not found (no metrics: never trained, or its job failed before the first epoch), unfinished
    (killed, failed, no best checkpoint), or finished but left out by the analysis parameters
    (experiment_v1 / experiment_v2). The first two are left out by the parameters too: the
    analysis refuses to compare a run it cannot find or, unless told to, an unfinished one."""
    names = {run.name for runs in compared.values() for run in runs}
    missing = []
    for arm, planned_names in planned.items():
        for name in planned_names:
            if name in names:
                continue
            metrics = out.metrics_csv(name)
            if not metrics.is_file():
                missing.append(MissingRun(name, arm, "not found", f"no {out.shown(metrics)}"))
                continue
            try:
                run = load_run(out, name)
            except ImginavError as err:
                missing.append(MissingRun(name, arm, "unfinished", str(err)))
                continue
            if run.finished:
                missing.append(
                    MissingRun(
                        name, arm, "left out by the parameters", "finished, but experiment_v1/experiment_v2 omit it"
                    )
                )
            else:
                missing.append(MissingRun(name, arm, "unfinished", run.problem))
    return missing
