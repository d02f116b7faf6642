"""What the study's LSF jobs run (``python -m imginav_core job train|probe|analysis``), and what a
job may take from its environment.

Every setting is given once, when the study is planned (``python -m imginav_core plan --set
KEY=VALUE``); a job reads that plan. From its environment a job takes only where it is and what it
may use: the output root (``IMGINAV_OUTPUTS``), its array index (``LSB_JOBINDEX``, passed as
``--index``), the conda environment ``hpc/common.sh`` activates (``IMGINAV_CONDA_ENV``,
``IMGINAV_CONDA_BASE``), its GPUs (``IMGINAV_GPUS``), and what the launcher and the report use
(``IMGINAV_STUDY``, ``IMGINAV_MAIL``, ``IMGINAV_HTML_MANAGER``). A job that finds any other
``IMGINAV_*`` variable -- a setting (``IMGINAV_EPOCHS``, ``IMGINAV_SET_TRAINING__LR``...) or a typo
-- stops at once, before anything is written, naming ``plan --set``.

Each job runs its notebook with papermill under a temporary name and renames it only when it
succeeded, so a failed or killed job never replaces a good executed notebook.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import REPO_ROOT
from ..errors import ConfigError, ImginavError
from .arms import read_study_file
from .plan import StudyPlan, find_plan, make_plan, read_plan, write_plan

# What a job may find in its environment, and what each means (the book's settings page lists them).
JOB_VARIABLES = {
    "IMGINAV_OUTPUTS": "the study's output root (relative: to the repository root); unset: `outputs/`",
    "IMGINAV_CONDA_ENV": "the conda environment the jobs activate (`imginav`; empty: the `python` on the `PATH`)",
    "IMGINAV_CONDA_BASE": "the conda installation to activate it from (the folder holding `etc/profile.d/conda.sh`)",
    "IMGINAV_GPUS": "GPUs of one node a training job uses data-parallel (`torchrun`; default 1)",
    "IMGINAV_STUDY": "the study's tag in the launcher's job names (default: the output root's folder name)",
    "IMGINAV_MAIL": "where LSF mails (the launcher's `bsub -u`): each failed run, the analysis's end",
    "IMGINAV_HTML_MANAGER": "a packed `@jupyter-widgets/html-manager` .tgz, for login nodes without npm",
    "IMGINAV_BENCH_CPU": "`hpc/bench.sh` only: its small CPU path",
    "IMGINAV_KILL_AT": "the fault-injection tests' kill point (`imginav_core/files.py`)",
}
# The variables earlier code took settings from, and the plan option that gives each now.
FORMER_SETTINGS = {
    "IMGINAV_DATA": "--set data.manifest=PATH",
    "IMGINAV_SEEDS": "--seeds 42,43",
    "IMGINAV_KLD_SWEEP": "--sweep",
    "IMGINAV_STUDY_FILE": "--study FILE",
    "IMGINAV_EPOCHS": "--set training.epochs=N",
    "IMGINAV_RESOLUTION": "--set data.resolution=N",
    "IMGINAV_DEVICE": "--set training.device=cpu (and probe.device, analysis.device)",
    "IMGINAV_PROBE_STEPS": "--set probe.steps=N",
}


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Stop (a ConfigError) at the first ``IMGINAV_*`` variable a job may not take."""
    environ = os.environ if environ is None else environ
    for variable in sorted(environ):
        if not variable.startswith("IMGINAV_") or variable in JOB_VARIABLES:
            continue
        if variable.startswith("IMGINAV_SET_"):
            key = variable.removeprefix("IMGINAV_SET_").lower().replace("__", ".")
            hint = f"--set {key}=VALUE"
        else:
            hint = FORMER_SETTINGS.get(variable, "--set KEY=VALUE")
        raise ConfigError(
            f"{variable} is set, and a job takes no setting from its environment: every setting is given when the "
            f"study is planned, once (python -m imginav_core plan {hint}; `python -m imginav_core plan --help`). "
            f"Unset {variable} and submit again"
        )


def output_root(environ: Mapping[str, str] | None = None) -> Path:
    """The study's output root: ``$IMGINAV_OUTPUTS`` (relative: to the repository root), else
    ``outputs/`` in the repository."""
    environ = os.environ if environ is None else environ
    given = environ.get("IMGINAV_OUTPUTS", "").strip()
    path = Path(given).expanduser() if given else Path("outputs")
    return (path if path.is_absolute() else REPO_ROOT / path).resolve()


def shown(path: Path) -> str:
    """A path as a log shows it: relative to the repository when it lies in it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


# ---- running a notebook ------------------------------------------------------------------------------


def execute_notebook(name: str, output: Path, parameters: dict[str, Any], log=print) -> None:
    """Run ``notebooks/NAME.ipynb`` with papermill into ``output``: under a temporary name, renamed
    when it succeeded; a failed run's partial notebook is kept as ``*.failed.ipynb``. The cells'
    output goes to this job's log as it comes; the kernel gets 300 s to start (on a compute node
    the first start imports torch from a shared file system with a cold cache)."""
    import papermill
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    sockets = tempfile.mkdtemp(prefix="imginav-kernel-")  # short: a Unix socket's path has ~100 characters

    class LocalSocketKernel(AsyncKernelManager):
        """The kernel talks over Unix sockets in a folder of this job's own, not TCP ports: array
        elements starting together on one node (the demo's runs, a node's several GPUs) were given
        the same free port now and then, and one failed with "Address already in use". The folder
        is this job's alone because jupyter_client's default socket name ("kernel-ipc-N" in the
        working directory, N the first unused) is shared by every job started from one repository:
        two jobs then bound the same sockets and read each other's messages ("Invalid Signature")."""

        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return os.path.join(sockets, "kernel")

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.stem + ".partial.ipynb")
    failed = output.with_name(output.stem + ".failed.ipynb")
    handler = logging.StreamHandler(sys.stdout)
    logging.getLogger("papermill").addHandler(handler)
    logging.getLogger("papermill").setLevel(logging.INFO)
    try:
        papermill.execute_notebook(
            str(REPO_ROOT / "notebooks" / f"{name}.ipynb"),
            str(partial),
            parameters=parameters,
            log_output=True,
            progress_bar=False,
            start_timeout=300,
            request_save_on_cell_execute=True,
            cwd=str(REPO_ROOT),
            kernel_manager_class=LocalSocketKernel,
        )
    except Exception as err:
        if partial.exists():
            partial.replace(failed)
        what = f"{err.ename}: {err.evalue}" if hasattr(err, "ename") else f"{type(err).__name__}: {err}"
        raise ImginavError(f"notebooks/{name}.ipynb failed ({what}); its partial output is {shown(failed)}") from None
    finally:
        logging.getLogger("papermill").removeHandler(handler)
        shutil.rmtree(sockets, ignore_errors=True)
    partial.replace(output)
    log(f"executed notebook: {shown(output)}")


# ---- the jobs ----------------------------------------------------------------------------------------


def planned_or_default(root: Path, arm: str, log=print) -> StudyPlan:
    """The plan under ``root``; with none, the study file's arms each with its first seed are
    planned first (one run per arm: what ``bsub < hpc/papermill_V1.sh`` and ``_V2.sh`` train), and
    said. Two single-run jobs starting together write it once (``write_plan`` holds the plan's lock
    and finds the same plan written)."""
    if find_plan(root) is None:
        study = read_study_file()
        log(
            f"no study plan under {shown(root)}: planning one run per arm ({', '.join(study.arms)}, seed "
            f"{study.seeds[0]}; python -m imginav_core plan chooses others), then training {arm}'s"
        )
        write_plan(make_plan(root, seeds=study.seeds[:1]), log)
    plan = read_plan(root)
    if arm not in plan.study.arms or not plan.arm_runs(arm):
        raise ConfigError(
            f"the study plan {plan.outputs.shown(plan.path)} has no run of arm {arm} (its arms: "
            f"{', '.join(plan.study.arms)}); submit the plan's own jobs (bash hpc/launch_phase1_2.sh), or plan another "
            "output root"
        )
    return plan


def train_job(index: int | None = None, arm: str | None = None, log=print) -> None:
    """Train one planned run: row ``index`` of the plan (an array element), or arm ``arm``'s first
    comparison run (a single-run job; with no plan, one is planned). Data-parallel under
    ``torchrun`` on ``IMGINAV_GPUS`` GPUs, then the training notebook shows (and, on one GPU,
    trains) it; a resubmitted job resumes from the run's last.pt."""
    check_environment()
    root = output_root()
    if (index is None) == (arm is None):
        raise ConfigError("job train: give the run as --index I (an array element) or --arm LABEL (one run)")
    plan = read_plan(root) if arm is None else planned_or_default(root, arm, log)
    run = plan.run(index) if index is not None else plan.arm_runs(arm)[0]
    out = plan.outputs
    log(f"run {run.index} of the plan: {run.name} ({run.arm}, seed {run.seed}, KL weight {run.kld:g})")
    gpus = int(os.environ.get("IMGINAV_GPUS", "1") or 1)
    if gpus > 1:
        command = ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", "imginav_core", "train"]
        subprocess.run([*command, str(plan.config_path(run))], check=True, cwd=REPO_ROOT)
    execute_notebook("train", out.executed_notebook(run.name), {"config": run.config}, log)


def probe_job(log=print) -> None:
    """The diffusion probe over every planned run (they must have finished), with the plan's settings."""
    from .runs import load_runs

    check_environment()
    plan = read_plan(output_root())
    load_runs(plan.outputs, [run.name for run in plan.runs])  # a failed training job stops it here, named
    execute_notebook("diffusion_probe", plan.outputs.probe_notebook, {"job": True}, log)
    log(f"probe metrics: {plan.outputs.shown(plan.outputs.probe_metrics)}")


def analysis_job(log=print) -> None:
    """The analysis notebook (it writes the study's results and decision), then the report."""
    from .analysis.endpoint import read_probe
    from .analysis.report import BOOK, stage, widget_script_source
    from .runs import load_runs

    check_environment()
    plan = read_plan(output_root())
    widget_script_source()  # the report is built last: a missing widget script stops the job now
    runs, _ = load_runs(plan.outputs, [n for label in plan.study.arms for n in plan.arm_names(label)])
    read_probe(plan.outputs.probe_metrics, runs)  # the primary endpoint: every run probed, as it trained
    execute_notebook("analysis", plan.outputs.analysis_notebook, {"job": True}, log)
    stage(plan)
    subprocess.run(["jupyter-book", "build", str(BOOK)], check=True, cwd=REPO_ROOT)
    log(f"report: {shown(BOOK / '_build' / 'html' / 'index.html')}")
