"""The study's runs, one table: which experiment, seed and KL weight each index of the LSF job
array trains, and the run folder it trains into.

The table follows from ``configs/phase1_2/study.yaml`` and the experiment configs it names:
first the comparison runs (each arm with each seed, arms in the file's order), then, only when
asked, the KL-weight sweep (the sweep arm with each weight and each seed). Row ``i`` is array
element ``$LSB_JOBINDEX = i`` (1-based). Torch-free: the command line and the launcher read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import is_folder_name, load_config, parse_yaml
from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
PLAN_FILE = REPO_ROOT / "configs/phase1_2/study.yaml"
PLAN_KEYS = ("arms", "seeds", "kld_sweep", "sweep_arm")


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
class StudyFile:
    """``study.yaml`` as read and checked."""

    path: Path
    arms: dict[str, Path]  # label -> experiment config
    seeds: list[int]
    kld_sweep: list[float]
    sweep_arm: str | None


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


def read_plan_file(plan_file: str | Path = PLAN_FILE) -> StudyFile:
    """Read and check a study file: an unknown or missing key is an error naming the file and key."""
    path = Path(plan_file)
    if not path.is_file():
        raise ConfigError(f"study plan not found: {path}")
    values = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping with the keys {', '.join(PLAN_KEYS)}")
    for key in values:
        if key not in PLAN_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'; a study plan has {', '.join(PLAN_KEYS)}")
    for key in ("arms", "seeds"):
        if key not in values:
            raise ConfigError(f"{path}: missing key '{key}'")
    arms = values["arms"]
    if not isinstance(arms, dict) or not arms or any(not isinstance(c, str) for c in arms.values()):
        raise ConfigError(
            f"{path}: 'arms' = {arms!r}: expected label: config file (relative to this file), "
            "e.g. {V1: V1_deterministic.yaml}"
        )
    for label in arms:
        if not isinstance(label, str) or not is_folder_name(label):
            raise ConfigError(f"{path}: arm label {label!r}: use only letters, digits, '_', '-', '.'")
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
        {label: path.parent / config for label, config in arms.items()},
        _seeds(values["seeds"], f"{path}: 'seeds'"),
        [float(k) for k in sweep],
        sweep_arm,
    )


def _shown(config: Path) -> str:
    """The config's path relative to the repository root (as the notebooks' ``-p config`` takes it)."""
    config = config.resolve()
    return str(config.relative_to(REPO_ROOT)) if config.is_relative_to(REPO_ROOT) else str(config)


def study_plan(
    seeds: list[int] | None = None, sweep: bool | None = None, plan_file: str | Path = PLAN_FILE
) -> list[PlannedRun]:
    """The runs, in array-index order. ``seeds``: None = the plan file's; ``sweep``: None = off
    (the sweep is trained only when asked: IMGINAV_KLD_SWEEP=1)."""
    study = read_plan_file(plan_file)
    seeds = study.seeds if seeds is None else check_seeds(seeds)
    rows: list[dict[str, Any]] = []
    own_kld: dict[str, float] = {}
    for arm, config in study.arms.items():
        cfg = load_config(config)
        own_kld[arm] = cfg.loss.kld
        rows += [
            dict(
                arm=arm, config=_shown(config), seed=seed, kld=cfg.loss.kld, name=f"{cfg.name}_seed{seed}", sweep=False
            )
            for seed in seeds
        ]
    if sweep:
        config = study.arms[study.sweep_arm]
        for kld in study.kld_sweep:
            # The arm's own weight is its comparison runs: the same training, so they are not
            # trained twice (sweep_names() lists them at that weight).
            if kld == own_kld[study.sweep_arm]:
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


def sweep_names(plan: list[PlannedRun]) -> dict[float, list[str]]:
    """The KL sweep's runs by weight, in seed order: the sweep runs, and at the sweep arm's own
    weight its comparison runs (trained once, for both). Empty when the plan has no sweep."""
    swept = [run for run in plan if run.sweep]
    if not swept:
        return {}
    arm = swept[0].arm
    seeds = [run.seed for run in plan if run.arm == arm and not run.sweep]
    points: dict[float, list[str]] = {}
    for run in sorted((r for r in plan if r.arm == arm), key=lambda r: (r.kld, seeds.index(r.seed))):
        points.setdefault(run.kld, []).append(run.name)
    return points


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
    """The plan as a Markdown table, one row per array index."""
    rows = ["| index | arm | name | config | seed | kld | sweep |", "| --- | --- | --- | --- | --- | --- | --- |"]
    rows += [
        f"| {r.index} | {r.arm} | {r.name} | {r.config} | {r.seed} | {r.kld:g} | {'yes' if r.sweep else 'no'} |"
        for r in plan
    ]
    return "\n".join(rows) + "\n"
