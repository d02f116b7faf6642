"""The study's runs, one table: which experiment, seed and KL weight each index of the LSF job
array trains, and the run folder it trains into.

The table follows from ``configs/phase1_2/study.yaml`` and the experiment configs it names:
first the comparison runs (each arm with each seed, arms in the file's order), then, only when
asked, the KL-weight sweep (the sweep arm with each weight and each seed; a weight that is an arm's
own is that arm's comparison runs, not trained twice). Row ``i`` is array element
``$LSB_JOBINDEX = i`` (1-based). Torch-free: the command line and the launcher read it.

The study file is also the one place that says what the arms are: each arm's label, experiment
config, colour in the figures and book page (``Arm``; ``study_arms``), and the two arms the
pre-registered decision compares (``decision_arms``). The plan, the analysis's run lists and the
figures iterate over them; a third arm is a new entry in the file, no code. Which file:
``IMGINAV_STUDY_FILE`` where set (relative to the repository root), else ``configs/phase1_2/study.yaml``.

The launcher and the demo record the plan they run (``StudyPlan``, written as
``OUTPUT_ROOT/<phase>/study_plan.json``: the rows, the seeds, whether the sweep was on, the study
file used), and the probe and the analysis take their runs from that record, so that the output
root alone says which runs a study has; without a record, the study file's default plan.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..config import REPO_ROOT, is_folder_name, load_config, parse_yaml
from ..errors import ConfigError
from ..files import write_text_atomic

PLAN_FILE = REPO_ROOT / "configs/phase1_2/study.yaml"
STUDY_FILE_VARIABLE = "IMGINAV_STUDY_FILE"
PLAN_KEYS = ("arms", "decision", "seeds", "kld_sweep", "sweep_arm")
ARM_KEYS = ("config", "colour", "page")
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def study_file() -> Path:
    """The study file in use: ``$IMGINAV_STUDY_FILE`` (relative to the repository root) where set,
    else ``configs/phase1_2/study.yaml``."""
    given = os.environ.get(STUDY_FILE_VARIABLE, "").strip()
    return REPO_ROOT / given if given else PLAN_FILE


@dataclass(frozen=True)
class PlannedRun:
    index: int  # 1-based LSB_JOBINDEX
    arm: str  # "V1" / "V2"
    config: str  # repository-relative config path
    seed: int
    kld: float  # the KL weight this run trains with
    name: str  # experiment name = run folder: f"{config name}_seed{seed}"; sweep runs f"{name}_kld{kld:g}_seed{seed}"
    sweep: bool  # part of the KL sweep (not of the V1/V2 comparison)


@dataclass(frozen=True)
class Arm:
    """One arm of the study, as its study file describes it."""

    label: str  # the figures' and the decision's name of it ("V1")
    config: Path  # its experiment config
    colour: str  # its colour in every figure, "#rrggbb"
    page: str  # the book page (book/_toc.yml) that shows its first run's training notebook


@dataclass(frozen=True)
class StudyFile:
    """``study.yaml`` as read and checked."""

    path: Path
    arms: dict[str, Arm]  # by label, in the file's order
    seeds: list[int]
    kld_sweep: list[float]
    sweep_arm: str | None
    decision: tuple[str, str]  # (baseline, candidate): the two arms the pre-registered decision compares

    @property
    def configs(self) -> dict[str, Path]:
        """Each arm's experiment config, by label."""
        return {label: arm.config for label, arm in self.arms.items()}


def _arm(path: Path, label: Any, entry: Any) -> Arm:
    """One entry of 'arms', checked: a ConfigError naming the file, the arm and the key otherwise."""
    if not isinstance(label, str) or not is_folder_name(label):
        raise ConfigError(f"{path}: arm label {label!r}: use only letters, digits, '_', '-', '.'")
    where = f"{path}: 'arms.{label}'"

    def key_is(key: str) -> str:
        return f"{path}: 'arms.{label}.{key}' = {entry[key]!r}"

    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where} = {entry!r}: expected the keys {', '.join(ARM_KEYS)}, e.g. "
            '{config: V1_deterministic.yaml, colour: "#377eb8", page: V1_training}'
        )
    for key in entry:
        if key not in ARM_KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'; an arm has {', '.join(ARM_KEYS)}")
    for key in ARM_KEYS:
        if key not in entry:
            raise ConfigError(f"{where}: missing key '{key}'")
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise ConfigError(f"{key_is(key)}: expected text")
    config = path.parent / entry["config"]
    if not config.is_file():
        raise ConfigError(f"{key_is('config')}: config file not found: {config}")
    if not HEX_COLOUR.fullmatch(entry["colour"]):
        raise ConfigError(f'{key_is("colour")}: expected a hex colour, e.g. "#377eb8"')
    if not is_folder_name(entry["page"]):
        raise ConfigError(f"{key_is('page')}: expected a page name (letters, digits, '_', '-', '.')")
    return Arm(label, config, entry["colour"], entry["page"])


def _decision(path: Path, value: Any, arms: dict[str, Arm]) -> tuple[str, str]:
    """'decision', checked: two different arms of the file."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(label not in arms for label in value)
        or value[0] == value[1]
    ):
        raise ConfigError(
            f"{path}: 'decision' = {value!r}: expected the two arms the decision compares, [baseline, candidate], "
            f"two of {', '.join(arms)}"
        )
    return value[0], value[1]


def _seeds(value: Any, where: str) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in value)
    ):
        raise ConfigError(f"{where} = {value!r}: expected a list of integer seeds (>= 0), e.g. [42, 43, 44]")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} = {value!r}: each seed once (two runs of one seed would share a folder)")
    return list(value)


def check_seeds(seeds: Any, where: str = "seeds") -> list[int]:
    """Seeds as the plan takes them; a ConfigError naming ``where`` otherwise."""
    return _seeds(seeds, where)


def read_plan_file(plan_file: str | Path | None = None) -> StudyFile:
    """Read and check a study file (None: ``study_file()``): an unknown or missing key is an error
    naming the file and key."""
    path = Path(plan_file or study_file())
    if not path.is_file():
        raise ConfigError(f"study plan not found: {path}")
    values = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping with the keys {', '.join(PLAN_KEYS)}")
    for key in values:
        if key not in PLAN_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'; a study plan has {', '.join(PLAN_KEYS)}")
    for key in ("arms", "decision", "seeds"):
        if key not in values:
            raise ConfigError(f"{path}: missing key '{key}'")
    if not isinstance(values["arms"], dict) or not values["arms"]:
        raise ConfigError(
            f"{path}: 'arms' = {values['arms']!r}: expected label: {{config, colour, page}}, e.g. "
            'V1: {config: V1_deterministic.yaml, colour: "#377eb8", page: V1_training}'
        )
    arms = {label: _arm(path, label, entry) for label, entry in values["arms"].items()}
    sweep = values.get("kld_sweep") or []
    if not isinstance(sweep, list) or any(
        not isinstance(k, (int, float)) or isinstance(k, bool) or k < 0 for k in sweep
    ):
        raise ConfigError(f"{path}: 'kld_sweep' = {sweep!r}: expected a list of KL weights >= 0, e.g. [0.0, 1.0e-4]")
    if len(set(sweep)) != len(sweep):
        raise ConfigError(f"{path}: 'kld_sweep' = {sweep!r}: each weight once")
    sweep_arm = values.get("sweep_arm")
    if sweep and sweep_arm not in arms:
        raise ConfigError(
            f"{path}: 'sweep_arm' = {sweep_arm!r}: expected the arm the KL sweep varies, one of {', '.join(arms)}"
        )
    return StudyFile(
        path,
        arms,
        _seeds(values["seeds"], f"{path}: 'seeds'"),
        [float(k) for k in sweep],
        sweep_arm,
        _decision(path, values["decision"], arms),
    )


def study_arms(plan_file: str | Path | None = None) -> dict[str, Arm]:
    """The study's arms by label, in the study file's order (None: ``study_file()``)."""
    return read_plan_file(plan_file).arms


def decision_arms(plan_file: str | Path | None = None) -> tuple[str, str]:
    """(baseline, candidate): the two arms the pre-registered decision compares."""
    return read_plan_file(plan_file).decision


def _shown(config: Path) -> str:
    """The config's path relative to the repository root (as the notebooks' ``-p config`` takes it)."""
    config = config.resolve()
    return str(config.relative_to(REPO_ROOT)) if config.is_relative_to(REPO_ROOT) else str(config)


def study_plan(
    seeds: list[int] | None = None, sweep: bool | None = None, plan_file: str | Path | None = None
) -> list[PlannedRun]:
    """The runs, in array-index order. ``seeds``: None = the plan file's; ``sweep``: None = off
    (the sweep is trained only when asked: IMGINAV_KLD_SWEEP=1)."""
    study = read_plan_file(plan_file)
    seeds = study.seeds if seeds is None else check_seeds(seeds)
    rows: list[dict[str, Any]] = []
    own_kld: dict[str, float] = {}
    for arm, config in study.configs.items():
        cfg = load_config(config)
        own_kld[arm] = cfg.loss.kld
        rows += [
            dict(
                arm=arm, config=_shown(config), seed=seed, kld=cfg.loss.kld, name=f"{cfg.name}_seed{seed}", sweep=False
            )
            for seed in seeds
        ]
    if sweep:
        config = study.configs[study.sweep_arm]
        for kld in study.kld_sweep:
            # A weight that is an arm's own is that arm's comparison runs (V1's 0: the deterministic
            # encoder; V2's 1e-4): the same training, so they are not trained twice (sweep_points()
            # lists them at that weight).
            if kld in own_kld.values():
                continue
            cfg = load_config(config, {"loss.kld": kld})  # refuses a weight the arm cannot take, naming it
            rows += [
                dict(
                    arm=study.sweep_arm,
                    config=_shown(config),
                    seed=seed,
                    kld=kld,
                    name=f"{cfg.name}_kld{kld:g}_seed{seed}",
                    sweep=True,
                )
                for seed in seeds
            ]
    return [PlannedRun(index=i, **row) for i, row in enumerate(rows, start=1)]


def arm_names(plan: list[PlannedRun], arm: str) -> list[str]:
    """The comparison runs (not the sweep's) of one arm, in seed order."""
    names = [run.name for run in plan if run.arm == arm and not run.sweep]
    if not names:
        arms = sorted({run.arm for run in plan})
        raise ConfigError(f"the study plan has no arm {arm!r}; its arms: {', '.join(arms)}")
    return names


def arm_weights(plan_file: str | Path | None = None) -> dict[str, float]:
    """Each arm's own KL weight (its experiment config's), by label."""
    return {arm: load_config(config).loss.kld for arm, config in read_plan_file(plan_file).configs.items()}


def is_sweep_run(arm: str, kld: float, plan_file: str | Path | None = None) -> bool:
    """Whether a run of ``arm`` trained with KL weight ``kld`` is a KL-sweep run: an arm of the
    study at a weight other than its own (a name that is no arm's is not)."""
    weights = arm_weights(plan_file)
    return arm in weights and kld != weights[arm]


@dataclass(frozen=True)
class SweepPoint:
    """One KL weight of the sweep and the runs trained with it."""

    kld: float
    arm: str  # the arm the runs belong to: the sweep arm, or the arm whose own weight this is
    names: list[str]  # in seed order
    comparison: bool  # the runs are that arm's comparison runs (trained once, for both)


def sweep_points(plan: list[PlannedRun], weights: list[float]) -> list[SweepPoint]:
    """The KL sweep's weights (``weights``: the study file's ``kld_sweep``; empty when the sweep is
    off), in increasing order, each with its runs: at an arm's own weight that arm's comparison runs
    (0: V1, the deterministic encoder; 1e-4: V2), else the sweep runs trained with it. A ConfigError
    when a weight has no runs in the plan (a sweep planned without IMGINAV_KLD_SWEEP=1)."""
    swept_arms = [run.arm for run in plan if run.sweep]
    arms = list(dict.fromkeys([*swept_arms, *(run.arm for run in plan)]))  # the sweep arm first
    own = {arm: next(run.kld for run in plan if run.arm == arm and not run.sweep) for arm in arms}
    points = []
    for kld in sorted(set(weights)):
        owner = next((arm for arm in arms if own[arm] == kld), None)
        if owner is not None:
            points.append(SweepPoint(kld, owner, arm_names(plan, owner), True))
            continue
        runs = [run for run in plan if run.sweep and run.kld == kld]
        if not runs:
            raise ConfigError(
                f"KL weight {kld:g} of the sweep has no runs in the study plan (was it made without the sweep?)"
            )
        points.append(SweepPoint(kld, runs[0].arm, [run.name for run in runs], False))
    return points


def sweep_names(plan: list[PlannedRun], weights: list[float]) -> dict[float, list[str]]:
    """``sweep_points`` as weight -> run names."""
    return {point.kld: point.names for point in sweep_points(plan, weights)}


# ---- the plan a study ran under, recorded in its output root ------------------------------------


@dataclass(frozen=True)
class StudyPlan:
    """A study plan with what it was made from: the launcher and the demo record it in the output
    root (``write_study_plan``); the probe, the analysis and the decision read it back."""

    runs: list[PlannedRun]
    seeds: list[int]
    sweep: bool  # IMGINAV_KLD_SWEEP was on: the runs include the KL sweep's
    study_file: str  # the study file, relative to the repository root where it lies inside it
    study: dict[str, Any]  # its keys, as read
    study_text: str  # its text, comments included
    source: str  # where this plan came from: the record's path, or the study file (nothing recorded)

    @property
    def kld_sweep(self) -> list[float]:
        """The sweep's KL weights; empty when the sweep was off."""
        return [float(k) for k in self.study.get("kld_sweep") or []] if self.sweep else []

    def sweep_points(self) -> list[SweepPoint]:
        return sweep_points(self.runs, self.kld_sweep)

    def to_json(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds,
            "sweep": self.sweep,
            "study_file": self.study_file,
            "study_sha256": hashlib.sha256(self.study_text.encode()).hexdigest(),
            "study": self.study,
            "study_text": self.study_text,
            "gpu_hours": list(plan_gpu_hours(self.runs)),
            "runs": [asdict(run) for run in self.runs],
        }


def make_study_plan(
    seeds: list[int] | None = None, sweep: bool | None = None, plan_file: str | Path | None = None
) -> StudyPlan:
    """``study_plan`` with what it was made from."""
    path = Path(plan_file or study_file())
    runs = study_plan(seeds, sweep, plan_file)
    text = path.read_text()
    return StudyPlan(
        runs,
        sorted({run.seed for run in runs}, key=[run.seed for run in runs].index),
        bool(sweep),
        _shown(path),
        parse_yaml(text, str(path)),
        text,
        _shown(path),
    )


def write_study_plan(path: str | Path, plan: StudyPlan) -> Path:
    """Record ``plan`` at ``path`` (JSON, written whole or not at all)."""
    write_text_atomic(path, json.dumps(plan.to_json(), indent=1) + "\n")
    return Path(path)


RUN_FIELDS = {field.name: field.type for field in fields(PlannedRun)}


def read_study_plan(path: str | Path) -> StudyPlan:
    """A recorded plan; a ConfigError naming the file and the key when it is not one."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(
            f"{path}: not a recorded study plan ({err}); record it again (python -m imginav_core plan "
            "--from-env --record)"
        ) from None
    keys = ("seeds", "sweep", "study_file", "study", "study_text", "runs")
    missing = [key for key in keys if not isinstance(values, dict) or key not in values]
    if missing:
        raise ConfigError(
            f"{path}: a recorded study plan has the keys {', '.join(keys)}; missing: {', '.join(missing)}"
        )
    runs = []
    for i, row in enumerate(values["runs"] if isinstance(values["runs"], list) else [None], start=1):
        if not isinstance(row, dict) or set(row) != set(RUN_FIELDS):
            raise ConfigError(f"{path}: 'runs' row {i} = {row!r}: expected the keys {', '.join(RUN_FIELDS)}")
        kinds = {"int": int, "str": str, "float": (int, float), "bool": bool}
        wrong = [key for key, kind in RUN_FIELDS.items() if not isinstance(row[key], kinds[kind])]
        if wrong or row["index"] != i or not is_folder_name(row["name"]):
            raise ConfigError(f"{path}: 'runs' row {i} = {row!r}: bad {', '.join(wrong) or 'index or name'}")
        runs.append(PlannedRun(**(row | {"kld": float(row["kld"])})))
    if not runs:
        raise ConfigError(f"{path}: 'runs' is empty: a recorded study plan lists its runs")
    return StudyPlan(
        runs,
        check_seeds(values["seeds"], f"{path}: 'seeds'"),
        bool(values["sweep"]),
        str(values["study_file"]),
        values["study"] if isinstance(values["study"], dict) else {},
        str(values["study_text"]),
        str(path),
    )


def study_plan_at(path: str | Path, plan_file: str | Path | None = None) -> StudyPlan:
    """The plan recorded at ``path``, or, when nothing is recorded there, the study file's default
    plan (its seeds, no sweep)."""
    return read_study_plan(path) if Path(path).is_file() else make_study_plan(plan_file=plan_file)


def planned_run(plan: list[PlannedRun], index: int) -> PlannedRun:
    """Row ``index`` of the plan; a ConfigError saying the range otherwise."""
    if not 1 <= index <= len(plan):
        raise ConfigError(
            f"array index {index} is not in the study plan: it has runs 1..{len(plan)} "
            "(python -m imginav_core plan lists them)"
        )
    return plan[index - 1]


def index_ranges(indices: list[int]) -> str:
    """Array indices as bsub -J writes them: [1, 2, 3, 7] -> "1-3,7"."""
    parts: list[str] = []
    for index in sorted(indices):
        if parts and index == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{index}"
        else:
            parts.append(str(index))
    return ",".join(parts)


def arm_indices(plan: list[PlannedRun]) -> dict[str, str]:
    """Each arm's array indices (its sweep runs included), as bsub -J writes them."""
    arms: dict[str, list[int]] = {}
    for run in plan:
        arms.setdefault(run.arm, []).append(run.index)
    return {arm: index_ranges(indices) for arm, indices in arms.items()}


def plan_table(plan: list[PlannedRun]) -> str:
    """The plan as a Markdown table, one row per array index, with what each run costs."""
    rows = [
        "| index | arm | name | config | seed | kld | sweep | GPU-hours |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in plan:
        low, high = run_gpu_hours(_epochs(r.config))
        rows.append(
            f"| {r.index} | {r.arm} | {r.name} | {r.config} | {r.seed} | {r.kld:g} | {'yes' if r.sweep else 'no'} | "
            f"{low:.1f}-{high:.1f} |"
        )
    return "\n".join(rows) + "\n"


def _epochs(config: str) -> int:
    """The epochs a planned run's config trains (its path as the plan shows it)."""
    path = Path(config)
    return load_config(path if path.is_absolute() else REPO_ROOT / path).training.epochs


def plan_gpu_hours(plan: list[PlannedRun]) -> tuple[float, float]:
    """(fewest, most) GPU-hours of training every run of ``plan`` on the cluster."""
    hours = [run_gpu_hours(_epochs(run.config)) for run in plan]
    return sum(low for low, _ in hours), sum(high for _, high in hours)


def plan_cost_text(plan: list[PlannedRun]) -> str:
    """What the plan's runs cost on the cluster, the comparison and the KL sweep apart."""
    comparison = [run for run in plan if not run.sweep]
    swept = [run for run in plan if run.sweep]

    def hours(runs: list[PlannedRun]) -> str:
        low, high = plan_gpu_hours(runs)
        return f"{low:.0f}-{high:.0f} GPU-hours"

    arms = ", ".join(
        f"{arm} {sum(r.arm == arm for r in comparison)}" for arm in dict.fromkeys(r.arm for r in comparison)
    )
    lines = [f"The comparison: {len(comparison)} runs ({arms}), {hours(comparison)}."]
    if swept:
        weights = sorted({run.kld for run in swept})
        seeds = len({run.seed for run in swept})
        lines.append(
            f"The KL sweep: {len(swept)} runs more ({swept[0].arm} at KL weights "
            f"{', '.join(f'{k:g}' for k in weights)} x {seeds} seed{'s' if seeds > 1 else ''}; an arm's own weight "
            f"is its comparison runs, not trained again: "
            f"{', '.join(f'{r.arm} {r.kld:g}' for r in _arm_weights(comparison))}), {hours(swept)}; "
            f"{len(plan)} runs in all, {hours(plan)}."
        )
    epochs = sorted({_epochs(run.config) for run in plan})
    low, high = run_gpu_hours(epochs[0])
    lines.append(
        f"A run: {'/'.join(map(str, epochs))} epochs over {USABLE_LAYOUTS:,} layouts at 512 x 512, at "
        f"{CLUSTER_IMAGES_PER_S[0]:.0f}-{CLUSTER_IMAGES_PER_S[1]:.0f} images/s (the cluster's V100 and L40s): "
        f"{low:.1f}-{high:.1f} GPU-hours; the probe and the analysis not included."
    )
    return "\n".join(lines) + "\n"


def _arm_weights(comparison: list[PlannedRun]) -> list[PlannedRun]:
    """The first comparison run of each arm: its own KL weight."""
    return list({run.arm: run for run in reversed(comparison)}.values())[::-1]


# ---- how many seeds: power and cost --------------------------------------------------------------

# What one comparison run costs on the cluster: 10 epochs over the 27,897 usable layouts at
# 512 x 512, at the 40-80 training images/s measured on its V100 (V1's queue) and L40s (V2's)
# nodes: 1.0-1.9 GPU-hours a run. The probe and the analysis come on top.
USABLE_LAYOUTS = 27_897
CLUSTER_IMAGES_PER_S = (40.0, 80.0)


def run_gpu_hours(epochs: int, layouts: int = USABLE_LAYOUTS) -> tuple[float, float]:
    """(fewest, most) GPU-hours of one run of ``epochs`` epochs at the cluster's throughput."""
    slow, fast = CLUSTER_IMAGES_PER_S
    return epochs * layouts / fast / 3600, epochs * layouts / slow / 3600


@dataclass(frozen=True)
class SeedOption:
    seeds: int  # per arm
    power: float  # chance that the decision's 95 % interval excludes zero for the effect
    detectable: float  # the effect found with the target power at this many seeds
    runs: int  # both arms
    gpu_hours: tuple[float, float]


def seed_plan(
    effect: float,
    spread: float,
    *,
    target: float = 0.8,
    seeds: range = range(2, 9),
    plan_file: str | Path | None = None,
) -> tuple[list[SeedOption], int | None, int]:
    """(one row per number of seeds per arm; the fewest seeds that reach ``target`` power, None
    beyond 100; the epochs a run trains, from the arms' configs). ``effect``: the true difference
    between the arms' means the study should detect; ``spread``: the standard deviation of a
    run's score between seeds within an arm (both in the score's units)."""
    from .stats import planned_detectable_effect, power, seeds_needed

    if not effect or not spread > 0:
        raise ConfigError(
            f"effect {effect}, spread {spread}: expected a difference to detect (not 0) and the runs' "
            "standard deviation within an arm (> 0), in the same units"
        )
    study = read_plan_file(plan_file)
    epochs = max(load_config(config).training.epochs for config in study.configs.values())
    per_run = run_gpu_hours(epochs)
    needed = seeds_needed(effect, spread, target=target)
    counts = sorted(set(seeds) | ({needed} if needed else set()))
    rows = [
        SeedOption(
            n,
            power(effect, spread, n),
            planned_detectable_effect(spread, n, target=target),
            len(study.arms) * n,
            (len(study.arms) * n * per_run[0], len(study.arms) * n * per_run[1]),
        )
        for n in counts
    ]
    return rows, needed, epochs


def seed_plan_text(effect: float, spread: float, *, target: float = 0.8, plan_file: str | Path | None = None) -> str:
    """``seed_plan`` as the command line prints it: a Markdown table and the answer."""
    rows, needed, epochs = seed_plan(effect, spread, target=target, plan_file=plan_file)
    low, high = run_gpu_hours(epochs)
    lines = [
        f"Detecting a difference of {effect:g} between the arms when a run's score scatters with standard "
        f"deviation {spread:g} between seeds ({abs(effect) / spread:.2f} standard deviations), by the decision's "
        f"two-sided 95 % interval (Welch's t) with {100 * target:.0f} % power:",
        "",
        f"| seeds per arm | power | detectable with {100 * target:.0f} % power | runs | GPU-hours |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.seeds} | {100 * r.power:.0f} % | {r.detectable:.3g} ({r.detectable / spread:.2f} sd) | {r.runs} | "
        f"{r.gpu_hours[0]:.0f}-{r.gpu_hours[1]:.0f} |"
        for r in rows
    ]
    lines.append("")
    if needed is None:
        lines.append(f"Even 100 seeds per arm do not reach {100 * target:.0f} % power for this difference.")
    else:
        row = next(r for r in rows if r.seeds == needed)
        lines.append(
            f"Needed: {needed} seeds per arm, {row.runs} runs, {row.gpu_hours[0]:.0f}-{row.gpu_hours[1]:.0f} GPU-hours."
        )
    lines.append(
        f"A run: {epochs} epochs over {USABLE_LAYOUTS:,} layouts at 512 x 512, at {CLUSTER_IMAGES_PER_S[0]:.0f}-"
        f"{CLUSTER_IMAGES_PER_S[1]:.0f} images/s (the cluster's V100 and L40s): {low:.1f}-{high:.1f} GPU-hours; "
        "the probe and the analysis not included. Unequal spreads in the two arms need more seeds."
    )
    return "\n".join(lines) + "\n"
