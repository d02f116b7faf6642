"""The study as a written plan: every setting is given once, when the study is planned, and every
job, notebook and the analysis reads that record.

    python -m imginav_core plan --out OUTPUT_ROOT [--seeds 42,43] [--sweep] [--set KEY=VALUE ...]

writes, before anything runs (``write_plan``, under a lock: array elements that start together and
find no plan do not race):

    OUTPUT_ROOT/experiments/NAME/planned.yaml   each run's complete config, as planned: the run
                                                trains from it and never writes it
    OUTPUT_ROOT/<phase>/study_plan.json         the runs (row i = LSF array index i), the arms, the
                                                seeds, the probe's and the analysis's settings
    OUTPUT_ROOT/<phase>/protocol.json           what decides, hashed (``study.protocol``)

A written plan is fixed: planning again with the same settings changes nothing, with other
settings is refused, naming what differs. Paths in the written files are relative to the output
root where they lie under it, so a study copied with ``cp -r`` still reads.

The study file (``configs/phase1_2/study.yaml``; ``--study`` another) says what the arms are: each
arm's label, experiment config, colour in the figures, book page and LSF queue, the two arms the
pre-registered decision compares, the seeds and the KL sweep. The runs follow from it: first each
arm with each seed (the comparison), then, with ``--sweep``, the sweep arm at each other weight
with each seed (a weight that is an arm's own is that arm's comparison runs, not trained twice).

``--set`` takes any config key (``training.epochs``), any probe setting (``probe.steps``,
``study.probe.settings``) and any analysis setting (``analysis.max_images``,
``study.analysis.settings``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import REPO_ROOT, Config, is_folder_name, load_config, write_config
from ..errors import ConfigError
from ..files import file_lock, write_text_atomic
from ..outputs import Outputs
from .analysis.settings import AnalysisSettings
from .arms import StudyFile, check_seeds, read_study_file
from .arms import activate as _activate
from .probe.settings import ProbeSettings

PLAN_NAME, PROTOCOL_NAME, PLANNED_CONFIG = "study_plan.json", "protocol.json", "planned.yaml"
FORMAT = 2  # of study_plan.json; 1: what earlier code recorded (no planned configs, no protocol)
# Keys the plan sets itself, per run: --set would set them for every run.
PLANNED_KEYS = {"name": "the run's name", "output_root": "--out", "training.seed": "--seeds", "phase": "the configs"}


# ---- the runs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    index: int  # 1-based LSB_JOBINDEX
    arm: str
    seed: int
    kld: float  # the KL weight it trains with
    name: str  # its folder: f"{config name}_seed{seed}"; a sweep run f"{name}_kld{kld:g}_seed{seed}"
    sweep: bool  # part of the KL sweep, not of the comparison

    @property
    def config(self) -> str:
        """Its planned config, relative to the output root (as the notebooks and jobs take it)."""
        return f"experiments/{self.name}/{PLANNED_CONFIG}"


def _runs(
    study: StudyFile, seeds: list[int], sweep: bool, overrides: dict[str, Any]
) -> list[tuple[PlannedRun, Config]]:
    """The runs in array-index order with their configs (``overrides`` applied)."""
    rows: list[tuple[str, int, float, str, bool, Config]] = []
    own: dict[str, float] = {}
    for label, arm in study.arms.items():
        base = load_config(arm.config, overrides)
        own[label] = base.loss.kld
        for seed in seeds:
            name = f"{base.name}_seed{seed}"
            rows.append(
                (
                    label,
                    seed,
                    base.loss.kld,
                    name,
                    False,
                    load_config(arm.config, overrides | {"name": name, "training.seed": seed}),
                )
            )
    if sweep:
        arm = study.arms[study.sweep_arm]
        for kld in study.kld_sweep:
            if kld in own.values():  # an arm's own weight is that arm's comparison runs: not trained twice
                continue
            for seed in seeds:
                name = f"{load_config(arm.config).name}_kld{kld:g}_seed{seed}"
                values = overrides | {"name": name, "training.seed": seed, "loss.kld": kld}
                rows.append((arm.label, seed, kld, name, True, load_config(arm.config, values)))
    phases = {cfg.phase for *_, cfg in rows}
    if len(phases) > 1:
        raise ConfigError(
            f"{study.path}: the arms' configs name different phases ({', '.join(sorted(phases))}); one study, one phase"
        )
    return [
        (PlannedRun(i, label, seed, kld, name, swept), cfg)
        for i, (label, seed, kld, name, swept, cfg) in enumerate(rows, 1)
    ]


@dataclass(frozen=True)
class SweepPoint:
    """One KL weight of the sweep and the runs trained with it."""

    kld: float
    arm: str  # the sweep arm, or the arm whose own weight this is
    names: list[str]  # in seed order
    comparison: bool  # the runs are that arm's comparison runs (trained once, for both)


# ---- the written plan -----------------------------------------------------------------------------------


@dataclass
class StudyPlan:
    root: Path  # the output root (absolute); not written: a copied study is where it is
    study: StudyFile
    seeds: list[int]
    sweep: bool
    settings: dict[str, Any]  # the --set values as given, by dotted key
    probe: ProbeSettings
    analysis: AnalysisSettings
    runs: list[PlannedRun]
    configs: dict[str, Config]  # by run name; empty for a plan recorded by earlier code
    code: dict[str, Any] = field(default_factory=dict)  # the code that wrote it (commit, digest)
    written: str = ""
    format: int = FORMAT

    @property
    def outputs(self) -> Outputs:
        phase = next(iter(self.configs.values())).phase if self.configs else _phase_of(self.study)
        return Outputs(self.root, phase)

    @property
    def path(self) -> Path:
        return self.outputs.phase_dir / PLAN_NAME

    def arm_runs(self, label: str, *, sweep: bool = False) -> list[PlannedRun]:
        """The comparison runs (with ``sweep``: also the sweep's) of one arm, in seed order."""
        return [run for run in self.runs if run.arm == label and (sweep or not run.sweep)]

    def arm_names(self, label: str) -> list[str]:
        names = [run.name for run in self.arm_runs(label)]
        if not names:
            raise ConfigError(f"the study plan {self.outputs.shown(self.path)} has no arm {label!r}")
        return names

    def run(self, index: int) -> PlannedRun:
        if not 1 <= index <= len(self.runs):
            raise ConfigError(
                f"array index {index} is not in the study plan {self.outputs.shown(self.path)}: it has runs "
                f"1..{len(self.runs)} (python -m imginav_core plan --show lists them)"
            )
        return self.runs[index - 1]

    def sweep_points(self) -> list[SweepPoint]:
        """The KL sweep's weights in increasing order, each with its runs: at an arm's own weight that
        arm's comparison runs (0: V1, the deterministic encoder; 1e-4: V2), else the sweep runs
        trained with it. Empty when the sweep was not planned."""
        if not self.sweep:
            return []
        own = (
            {label: self.configs[self.arm_runs(label)[0].name].loss.kld for label in self.study.arms}
            if self.configs
            else {}
        )
        points = []
        for kld in self.study.kld_sweep:
            owner = next((label for label, weight in own.items() if weight == kld), None)
            if owner is not None:
                points.append(SweepPoint(kld, owner, self.arm_names(owner), True))
                continue
            runs = [run for run in self.runs if run.sweep and run.kld == kld]
            points.append(SweepPoint(kld, runs[0].arm, [run.name for run in runs], False))
        return points

    def config_path(self, run: PlannedRun) -> Path:
        return self.root / run.config

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "written": self.written,
            "code": self.code,
            "study_file": _shown(self.study.path),
            "study_text": self.study.text,
            "seeds": self.seeds,
            "sweep": self.sweep,
            "settings": self.settings,
            "probe": self.probe.to_json(),
            "analysis": asdict(self.analysis),
            "runs": [asdict(run) | {"config": run.config} for run in self.runs],
        }


def _phase_of(study: StudyFile) -> str:
    return load_config(next(iter(study.arms.values())).config).phase


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], ProbeSettings, AnalysisSettings]:
    """``--set`` values as (config overrides, probe settings, analysis settings); a key that names
    no setting, or one the plan sets itself, is refused, named."""
    config, probe, analysis = {}, {}, {}
    for key, value in settings.items():
        if key in PLANNED_KEYS:
            raise ConfigError(f"--set {key}: the plan sets each run's {key} itself (use {PLANNED_KEYS[key]})")
        group, _, rest = key.partition(".")
        target = {"probe": (probe, ProbeSettings), "analysis": (analysis, AnalysisSettings)}.get(group)
        if target is None:
            config[key] = value
            continue
        names = {f.name for f in dataclasses.fields(target[1])}
        if rest not in names:
            raise ConfigError(
                f"--set {key}: no such {group} setting; the {group} settings are {', '.join(sorted(names))}"
            )
        target[0][rest] = tuple(value) if isinstance(value, list) else value
    try:
        return config, ProbeSettings(**probe), AnalysisSettings(**analysis)
    except TypeError as err:
        raise ConfigError(f"--set: {err}") from None


def make_plan(
    root: str | Path,
    study_file: str | Path | None = None,
    seeds: list[int] | None = None,
    sweep: bool = False,
    settings: dict[str, Any] | None = None,
) -> StudyPlan:
    """The plan for a study under ``root``: nothing is written (``write_plan``)."""
    study = read_study_file(study_file)
    if sweep and not study.kld_sweep:
        raise ConfigError(f"--sweep: {study.path} has no kld_sweep")
    missing = [label for label, arm in study.arms.items() if not arm.queue]
    if missing:
        raise ConfigError(
            f"{study.path}: arm(s) {', '.join(missing)} name no queue (arms.LABEL.queue: the LSF queue it trains on)"
        )
    settings = dict(settings or {})
    root = Path(root).resolve()
    overrides, probe, analysis = split_settings(settings)
    seeds = study.seeds if seeds is None else check_seeds(seeds, "--seeds")
    rows = _runs(study, seeds, sweep, overrides | {"output_root": str(root)})
    return StudyPlan(
        root, study, seeds, sweep, settings, probe, analysis, [r for r, _ in rows], {r.name: c for r, c in rows}
    )


def find_plan(root: str | Path) -> Path | None:
    """The study plan under ``root`` (``OUTPUT_ROOT/<phase>/study_plan.json``), or None; a
    ConfigError when there are several (one output root, one study)."""
    found = sorted(Path(root).glob(f"*/{PLAN_NAME}"))
    if len(found) > 1:
        raise ConfigError(
            f"{root} holds more than one study plan ({', '.join(map(str, found))}): one output root, one study"
        )
    return found[0] if found else None


def write_plan(plan: StudyPlan, log=print) -> bool:
    """Write the plan (its runs' configs, ``study_plan.json``, ``protocol.json``) unless the same
    plan is written already; True if it wrote. A different plan already there is refused, naming
    what differs: a plan is fixed once written."""
    from .protocol import code_record, write_protocol

    out = plan.outputs
    with file_lock(out.phase_dir / ".plan.lock"):
        existing = find_plan(plan.root)
        if existing is not None:
            differences = plan_differences(read_plan(plan.root, activate=False), plan)
            if not differences:
                log(f"the study is planned already, as asked: {out.shown(existing)}")
                return False
            raise ConfigError(
                f"{out.shown(existing)} holds another plan ({'; '.join(differences[:8])}"
                f"{'; ...' if len(differences) > 8 else ''}). A written plan is fixed: plan into another output root "
                "(--out), or remove this one to start afresh"
            )
        plan.code = code_record()
        plan.written = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        for run in plan.runs:
            write_run_config(plan.configs[run.name], plan.config_path(run))
        write_text_atomic(plan.path, json.dumps(plan.to_json(), indent=1) + "\n")
        write_protocol(plan)
    log(f"study plan written: {out.shown(plan.path)} ({len(plan.runs)} runs), their configs and the protocol")
    return True


def plan_differences(old: StudyPlan, new: StudyPlan) -> list[str]:
    """What differs between two plans of one output root, as 'what: old -> new'."""
    a, b = old.to_json(), new.to_json()
    differences = [
        f"{key}: {a[key]!r} -> {b[key]!r}" for key in ("study_file", "seeds", "sweep", "settings") if a[key] != b[key]
    ]
    for group in ("probe", "analysis"):
        differences += [
            f"{group}.{k}: {a[group].get(k)!r} -> {v!r}" for k, v in b[group].items() if a[group].get(k) != v
        ]
    if [r["name"] for r in a["runs"]] != [r["name"] for r in b["runs"]]:
        differences.append(f"runs: {len(a['runs'])} -> {len(b['runs'])}")
    for name, cfg in new.configs.items():
        if name in old.configs:
            differences += [f"{name}: {d}" for d in config_differences(old.configs[name], cfg)]
    if a["study_text"] != b["study_text"] and a["study_file"] == b["study_file"]:
        differences.append(f"{b['study_file']} changed since the plan was written")
    return differences


def config_differences(old: Config, new: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    from ..config import flatten

    a, b = flatten(old.to_dict()), flatten(new.to_dict())
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and k not in ignore
    ]


def read_plan(root: str | Path, *, activate: bool = True) -> StudyPlan:
    """The plan written under ``root`` (its configs read back from their files); ``activate``: its
    study becomes the process's active one (``study_arms``). A ConfigError saying how to write one
    when there is none."""
    root = Path(root).resolve()
    path = find_plan(root)
    if path is None:
        raise ConfigError(
            f"no study plan under {root}: plan the study first (python -m imginav_core plan --out {root}; "
            "bash hpc/launch_phase1_2.sh and make demo do it)"
        )
    try:
        values = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(f"{path}: not a study plan ({err})") from None
    if not isinstance(values, dict) or "runs" not in values or "study_text" not in values:
        raise ConfigError(f"{path}: not a study plan (written by python -m imginav_core plan): no runs or study_text")
    study = read_study_file(REPO_ROOT / values["study_file"], values["study_text"])  # as it was when planned
    fmt = int(values.get("format", 1))
    runs = [_planned_run(path, i, row) for i, row in enumerate(values["runs"], 1)]
    probe = ProbeSettings(**_tuples(values.get("probe") or {}))
    analysis = AnalysisSettings(**(values.get("analysis") or {}))
    configs = {}
    if fmt >= 2:
        configs = {run.name: read_run_config(root / run.config) for run in runs}
    plan = StudyPlan(
        root,
        study,
        list(values["seeds"]),
        bool(values["sweep"]),
        values.get("settings") or {},
        probe,
        analysis,
        runs,
        configs,
        values.get("code") or {},
        values.get("written", ""),
        fmt,
    )
    if activate:
        _activate(study)
    return plan


def _tuples(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _planned_run(path: Path, index: int, row: Any) -> PlannedRun:
    keys = {f.name for f in dataclasses.fields(PlannedRun)}
    if (
        not isinstance(row, dict)
        or not keys <= set(row)
        or row["index"] != index
        or not is_folder_name(str(row["name"]))
    ):
        raise ConfigError(f"{path}: 'runs' row {index} = {row!r}: expected the keys {', '.join(sorted(keys))}")
    return PlannedRun(**{k: row[k] for k in keys} | {"kld": float(row["kld"])})


# ---- a run's config file -----------------------------------------------------------------------------


def write_run_config(cfg: Config, path: Path) -> None:
    """``cfg`` as a run's planned config: every key, the output root (and paths under it) relative
    to the file (``output_root: ../..``), so the study reads wherever it is copied."""
    write_config(cfg, path, header="# planned by python -m imginav_core plan: the run trains from this file\n")


def read_run_config(path: Path) -> Config:
    """A run's planned config, its relative paths read against its own folder."""
    if not path.is_file():
        raise ConfigError(
            f"{path}: the run's planned config is missing (the plan writes it: python -m imginav_core plan)"
        )
    return load_config(path)


# ---- reading a plan as the launcher does ------------------------------------------------------------


def index_ranges(indices: list[int]) -> str:
    """Array indices as bsub -J writes them: [1, 2, 3, 7] -> "1-3,7"."""
    parts: list[str] = []
    for index in sorted(indices):
        if parts and index == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{index}"
        else:
            parts.append(str(index))
    return ",".join(parts)


def arrays(plan: StudyPlan, runs: list[PlannedRun]) -> list[tuple[str, str, str]]:
    """(arm, its array indices as bsub -J writes them, its queue) for the arms with runs in ``runs``."""
    by_arm: dict[str, list[int]] = {}
    for run in runs:
        by_arm.setdefault(run.arm, []).append(run.index)
    return [(arm, index_ranges(indices), plan.study.arms[arm].queue) for arm, indices in by_arm.items()]


def plan_table(plan: StudyPlan) -> str:
    """The plan as a Markdown table, one row per array index."""
    from .budget import run_gpu_hours

    rows = ["| index | arm | name | seed | kld | sweep | GPU-hours |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in plan.runs:
        low, high = run_gpu_hours(plan.configs[r.name].training.epochs) if plan.configs else (0.0, 0.0)
        sweep = "yes" if r.sweep else "no"
        rows.append(f"| {r.index} | {r.arm} | {r.name} | {r.seed} | {r.kld:g} | {sweep} | {low:.1f}-{high:.1f} |")
    return "\n".join(rows) + "\n"
