"""What the three notebooks open on: a study under an output root, as its plan wrote it.

A notebook's parameters name only what to look at -- a planned run's config, the output root --
and, for the jobs, ``job=True``. Opened with ``IMGINAV_OUTPUTS`` set (``make lab``), each opens on
that study and changes nothing of it: ``train.ipynb`` shows the study's first planned run and
trains nothing; ``diffusion_probe.ipynb`` shows the probe's recorded results and computes
nothing; ``analysis.ipynb`` measures and decides again, writes no file of the study, and says
whether its decision is the study's. A new run, when wanted, is derived from a planned one under a
new name and trained in a scratch output root beside the study (``OUTPUT_ROOT-scratch``), never in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, config_from_dict, is_folder_name
from ..errors import ConfigError, ProbeError
from .jobs import output_root

if TYPE_CHECKING:
    from .analysis.loading import AnalysisInputs
from .plan import PLANNED_CONFIG, StudyPlan, config_differences, find_plan, read_plan, read_run_config, write_run_config


def study_root(given: str | None = None) -> Path:
    """``given`` (relative: to the repository root), else ``$IMGINAV_OUTPUTS``, else ``outputs/``."""
    return output_root({"IMGINAV_OUTPUTS": given} if given else os.environ)


@dataclass
class TrainingRun:
    cfg: Config
    train: bool  # named explicitly (the job, or a variant): train it (resuming); else only show it
    plan: StudyPlan | None  # the study it belongs to (None: a scratch variant's)
    note: str  # what the notebook says about where the run comes from


def training_run(config: str | None = None, variant: dict[str, Any] | None = None) -> TrainingRun:
    """The run train.ipynb shows or trains. ``config``: a planned run's config (relative: to the
    output root, e.g. ``experiments/NAME/planned.yaml``), trained (or resumed; a finished run only
    shown); None: the study's first planned run, shown, never trained. ``variant``: ``{"name": NEW,
    KEY: VALUE, ...}``, a new run derived from that one, trained in the scratch output root."""
    root = study_root()
    if config is None:
        plan = read_plan(root)
        run = plan.runs[0]
        cfg, train = plan.configs[run.name], False
        note = f"the study's first planned run ({run.arm}, seed {run.seed}; {len(plan.runs)} runs planned)"
    else:
        path = Path(config).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise ConfigError(
                f"config = {config!r}: no planned config at {path}; give a planned run's config relative to the "
                f"study's output root, e.g. experiments/NAME/{PLANNED_CONFIG} (plan --show lists them)"
            )
        plan = read_plan(root) if path.resolve().is_relative_to(root) and find_plan(root) else None
        cfg, train, note = read_run_config(path), True, f"the planned run {path.parent.name}"
    if variant:
        cfg, note = derive_variant(cfg, variant, root), f"a variant of {cfg.name} in the scratch output root"
        return TrainingRun(cfg, True, None, note)
    return TrainingRun(cfg, train, plan, note)


def scratch_root(root: Path) -> Path:
    """Where runs derived in a notebook train: beside the study, never in it."""
    return root.with_name(root.name + "-scratch")


def derive_variant(cfg: Config, variant: dict[str, Any], root: Path) -> Config:
    """A new run from ``cfg``: ``variant["name"]`` and its other keys (dotted config keys) changed,
    its planned config written under the scratch output root. The same name with other settings
    than an earlier variant is refused (it would resume a differently configured run)."""
    changes = dict(variant)
    name = changes.pop("name", None)
    if not isinstance(name, str) or not is_folder_name(name) or name == cfg.name:
        raise ConfigError(
            f"variant = {variant!r}: give the new run a name of its own (letters, digits, '_', '-', '.'), "
            f'e.g. {{"name": "{cfg.name}_lr3e-4", "training.lr": 3e-4}}'
        )
    scratch = scratch_root(root)
    path = scratch / "experiments" / name / PLANNED_CONFIG
    values = cfg.to_dict() | {"name": name, "output_root": str(scratch)}
    derived = config_from_dict(values, changes, source=f"variant {name}")
    if path.is_file():
        earlier = read_run_config(path)
        if earlier.to_dict() != derived.to_dict():
            changed = "; ".join(config_differences(earlier, derived))
            raise ConfigError(
                f"variant {name!r} was derived before with other settings ({changed}); give this one another name"
            )
        return earlier
    write_run_config(derived, path)
    return derived


# ---- the probe and the analysis ----------------------------------------------------------------------


def probe_study(output_root: str | None = None, job: bool = False):
    """(the plan, the probe's metrics, the settings they were measured with) for
    diffusion_probe.ipynb. ``job``: probe every planned run with the plan's settings (resuming what a
    killed probe did); else the probe's recorded results, which must cover every planned run as it
    last trained -- a ProbeError saying which job computes them otherwise (the notebook computes
    nothing)."""
    from .analysis.endpoint import probe_problems
    from .probe.settings import ProbeSettings
    from .runs import load_runs

    plan = read_plan(study_root(output_root))
    out, names = plan.outputs, [run.name for run in plan.runs]
    if job:
        from .probe.run import run_probe

        return plan, run_probe(out, names, plan.probe), plan.probe
    runs, _ = load_runs(out, names, allow_unfinished=True)
    probe, problem = probe_problems(out.probe_metrics, runs)
    if probe is None:
        raise ProbeError(
            f"{problem}. This notebook shows the probe's results and computes none: the probe job does "
            "(bsub < hpc/diffusion_probe.sh, or python -m imginav_core probe)"
        )
    recorded = {k: tuple(v) if isinstance(v, list) else v for k, v in probe.settings.items()}
    return plan, probe, ProbeSettings(**recorded)


def analysis_inputs(
    output_root: str | None = None, job: bool = False, allow_unfinished: bool = False, allow_no_probe: bool = False
) -> AnalysisInputs:
    """What analysis.ipynb compares: every arm's comparison runs of the plan under the output root."""
    from .analysis.loading import AnalysisInputs, load_arms

    plan = read_plan(study_root(output_root))
    arms = {label: plan.arm_names(label) for label in plan.study.arms if plan.arm_runs(label)}
    return AnalysisInputs(plan, load_arms(plan.outputs, arms, allow_unfinished), job, allow_unfinished, allow_no_probe)


def same_decision(decision, out) -> str:
    """Whether a decision made in a notebook is the study's (``decision.json``, which the notebook
    leaves as it is): the same choice, verdict and primary interval, or what differs."""
    from .results import Decision, ResultsError

    try:
        recorded = Decision.read(out.decision)
    except ResultsError:
        return f"the study has no decision yet ({out.shown(out.decision)}: the analysis job writes it); none written"

    def headline(d: Decision) -> dict:
        primary = d.primary or {}
        return {"choice": d.choice, "verdict": d.verdict, "primary": [primary.get("estimate"), primary.get("ci95")]}

    a, b = headline(recorded), headline(decision)
    if a == b:
        return f"the same decision as the study's {out.shown(out.decision)} (left as it is): {decision.verdict}"
    changed = "; ".join(f"{k}: {a[k]} (the study's) -> {b[k]} (here)" for k in a if a[k] != b[k])
    return f"NOT the study's decision ({out.shown(out.decision)}, left as it is): {changed}"
