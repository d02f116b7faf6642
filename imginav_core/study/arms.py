"""The arms as data: the study file (``configs/phase1_2/study.yaml``) says what the arms are --
each arm's label, experiment config, colour in the figures, report page and LSF queue -- which two
the pre-registered decision compares, the seeds and the KL sweep. The plan, the job scripts
(``python -m imginav_core job-scripts``), the report's chapters, the figures' legends and the
decision all read it from here; a third arm is one more entry in the file, no code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import REPO_ROOT, is_folder_name, load_config, parse_yaml
from ..errors import ConfigError

STUDY_FILE = REPO_ROOT / "configs/phase1_2/study.yaml"
STUDY_KEYS = ("arms", "decision", "seeds", "kld_sweep", "sweep_arm")
ARM_KEYS = ("config", "colour", "page", "queue")  # queue: absent from plans recorded by earlier code
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


# ---- the study file: what the arms are ---------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    label: str  # the figures' and the decision's name of it ("V1")
    config: Path  # its experiment config
    colour: str  # its colour in every figure, "#rrggbb"
    page: str  # the report page that shows its first run's training notebook
    queue: str  # the LSF queue its runs train on


@dataclass(frozen=True)
class StudyFile:
    path: Path
    text: str
    arms: dict[str, Arm]  # by label, in the file's order
    decision: tuple[str, str]  # (baseline, candidate): the two arms the pre-registered decision compares
    seeds: list[int]
    kld_sweep: list[float]
    sweep_arm: str | None

    @property
    def content(self) -> dict[str, Any]:
        return parse_yaml(self.text, str(self.path)) or {}


def _arm(path: Path, label: Any, entry: Any) -> Arm:
    """One entry of 'arms', checked: a ConfigError naming the file, the arm and the key otherwise."""
    if not isinstance(label, str) or not is_folder_name(label):
        raise ConfigError(f"{path}: arm label {label!r}: use only letters, digits, '_', '-', '.'")
    example = '{config: V1_deterministic.yaml, colour: "#377eb8", page: V1_training, queue: gpuv100}'
    if not isinstance(entry, dict) or not set(ARM_KEYS) - {"queue"} <= set(entry) <= set(ARM_KEYS):
        raise ConfigError(
            f"{path}: 'arms.{label}' = {entry!r}: expected the keys {', '.join(ARM_KEYS)}, e.g. {example}"
        )
    entry = {"queue": ""} | entry
    for key in ARM_KEYS[:3]:
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise ConfigError(f"{path}: 'arms.{label}.{key}' = {entry[key]!r}: expected text")
    config = path.parent / entry["config"]
    if not config.is_file():
        raise ConfigError(f"{path}: 'arms.{label}.config' = {entry['config']!r}: config file not found: {config}")
    if not HEX_COLOUR.fullmatch(entry["colour"]):
        raise ConfigError(
            f"{path}: 'arms.{label}.colour' = {entry['colour']!r}: expected a hex colour, e.g. \"#377eb8\""
        )
    for key in ("page", "queue"):
        if entry[key] and not is_folder_name(entry[key]):
            raise ConfigError(f"{path}: 'arms.{label}.{key}' = {entry[key]!r}: letters, digits, '_', '-', '.' only")
    return Arm(label, config, entry["colour"], entry["page"], entry["queue"])


def check_seeds(value: Any, where: str) -> list[int]:
    """Seeds as the plan takes them; a ConfigError naming ``where`` otherwise."""
    if (
        not isinstance(value, list)
        or not value
        or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in value)
    ):
        raise ConfigError(f"{where} = {value!r}: expected a list of integer seeds (>= 0), e.g. [42, 43, 44]")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} = {value!r}: each seed once (two runs of one seed would share a folder)")
    return list(value)


def read_study_file(path: str | Path | None = None, text: str | None = None) -> StudyFile:
    """A study file, checked (``text``: its content as a plan recorded it). Unknown or missing keys
    are errors naming the file and the key."""
    path = Path(path or STUDY_FILE)
    if text is None:
        if not path.is_file():
            raise ConfigError(f"study file not found: {path}")
        text = path.read_text()
    values = parse_yaml(text, str(path)) or {}
    if not isinstance(values, dict) or set(values) - set(STUDY_KEYS):
        raise ConfigError(f"{path}: expected a mapping with the keys {', '.join(STUDY_KEYS)}")
    for key in ("arms", "decision", "seeds"):
        if key not in values:
            raise ConfigError(f"{path}: missing key '{key}'")
    if not isinstance(values["arms"], dict) or not values["arms"]:
        raise ConfigError(f"{path}: 'arms' = {values['arms']!r}: expected label: {{{', '.join(ARM_KEYS)}}}")
    arms = {label: _arm(path, label, entry) for label, entry in values["arms"].items()}
    decision = values["decision"]
    if not isinstance(decision, list) or len(decision) != 2 or decision[0] == decision[1] or set(decision) - set(arms):
        raise ConfigError(
            f"{path}: 'decision' = {decision!r}: expected the two arms the decision compares, [baseline, candidate], "
            f"two of {', '.join(arms)}"
        )
    sweep = values.get("kld_sweep") or []
    if not isinstance(sweep, list) or any(
        not isinstance(k, (int, float)) or isinstance(k, bool) or k < 0 for k in sweep
    ):
        raise ConfigError(f"{path}: 'kld_sweep' = {sweep!r}: expected a list of KL weights >= 0, e.g. [0.0, 1.0e-4]")
    sweep_arm = values.get("sweep_arm")
    if sweep and sweep_arm not in arms:
        raise ConfigError(
            f"{path}: 'sweep_arm' = {sweep_arm!r}: expected the arm the KL sweep varies, one of {', '.join(arms)}"
        )
    seeds = check_seeds(values["seeds"], f"{path}: 'seeds'")
    return StudyFile(path, text, arms, (decision[0], decision[1]), seeds, sorted(float(k) for k in sweep), sweep_arm)


# The study this process works on: the one its plan recorded (``read_plan`` makes it the active one),
# else the default study file. The figures' colours, the report's pages and the decision's two arms
# are that study's: one process, one study.
_active: StudyFile | None = None


def active_study() -> StudyFile:
    return _active or read_study_file()


def study_arms() -> dict[str, Arm]:
    """The active study's arms by label, in its study file's order."""
    return active_study().arms


def decision_arms() -> tuple[str, str]:
    """(baseline, candidate): the two arms the active study's pre-registered decision compares."""
    return active_study().decision


def activate(study: StudyFile) -> None:
    """Make ``study`` the process's active study (``read_plan`` does, for the plan it reads)."""
    global _active
    _active = study


def own_weights() -> dict[str, float]:
    """Each arm's own KL weight (its experiment config's), by label."""
    return {label: load_config(arm.config).loss.kld for label, arm in study_arms().items()}


def is_sweep_run(arm: str, kld: float) -> bool:
    """Whether a run of ``arm`` trained with KL weight ``kld`` is a KL-sweep run: an arm of the
    study at a weight other than its own (a name that is no arm's is not)."""
    weights = own_weights()
    return arm in weights and kld != weights[arm]
