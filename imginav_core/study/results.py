"""The study's results as records: the latent-space measurements (``latent_metrics.json``, written
by the analysis), the diffusion probe's scores (``probe_metrics.json``, written by the probe) and the
decision (``decision.json``). Each is written by its ``write`` and read by its ``read``, and by
nothing else, so the three files keep one layout: the record's fields are the file's top-level keys,
in the file's order. What lies below the top level (a criterion, a run's measures) stays the JSON
object it is: the report and the notebooks read those by name.

Reading checks every top-level key is there with the type the record holds: a file with one missing
or of another type is refused with its path and the key (``ResultsError``), not read into a record a
later step would trip over. Torch-free: the launcher's checks and the report read these on a login
node.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ImginavError
from ..files import write_text_atomic

R = TypeVar("R")


class ResultsError(ImginavError, ValueError):
    """A results file that is not what its writer writes: unreadable, or a key missing or mistyped."""


def _types(annotation: Any) -> tuple[type, ...]:
    """The Python types of the JSON values a field's annotation accepts (a float field takes an int:
    JSON writes 2.0 as 2.0 but a count as 2)."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return tuple(t for arg in typing.get_args(annotation) for t in _types(arg))
    if annotation is type(None):
        return (type(None),)
    kind = origin or annotation
    return (float, int) if kind is float else (kind,)


def _type_name(accepted: tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}
    names |= {bool: "true or false", type(None): "null"}
    shown = [t for t in accepted if not (t is int and float in accepted)]  # a number: float or int
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in shown))


def _from_json(cls: type[R], data: Any, path: Path) -> R:
    """``cls`` from a file's parsed JSON, each field checked: a ResultsError names the file and key."""
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object with {cls.__name__}'s keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in data and field.default_factory is not dataclasses.MISSING:
            values[field.name] = field.default_factory()  # a key added since: older files lack it
            continue
        if field.name not in data:
            raise ResultsError(f"{path}: the key '{field.name}' is missing (written by {cls.__name__}.write)")
        value, accepted = data[field.name], _types(hints[field.name])
        # true is an int to Python, never a count or a number in these files
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            raise ResultsError(f"{path}: '{field.name}' should be {_type_name(accepted)}, got {json.dumps(value)[:80]}")
        values[field.name] = value
    return cls(**values)


def _read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ResultsError(f"{path}: not readable as JSON ({err})") from None


class _Record:
    """``to_json`` / ``write`` / ``read`` for a dataclass whose fields are a file's top-level keys."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # the fields' order: the file's key order

    def write(self, path: Path) -> Path:
        """Write the record whole or not at all (NaN where a measure has none, as JSON's NaN)."""
        write_text_atomic(path, json.dumps(self.to_json(), indent=1, allow_nan=True))
        return Path(path)

    @classmethod
    def read(cls: type[R], path: Path) -> R:
        return _from_json(cls, _read_json(path), Path(path))


@dataclasses.dataclass(frozen=True)
class LatentMetrics(_Record):
    """``OUTPUT_ROOT/<phase>/analysis/latent_metrics.json``: every run measured on the same test layouts."""

    settings: dict[str, Any]  # the analysis settings (study.AnalysisSettings)
    evaluation_split: str  # test: never seen by training or checkpoint choice
    evaluation_images: int
    evaluation_scenes: int
    evaluation_groups: int  # scenes joined with identical layouts: the bootstrap's clusters
    split: dict[str, Any]  # the sides' sizes and what the split did with identical layouts
    arms: dict[str, list[str]]  # arm -> its runs
    pairs: list[dict[str, Any]]  # the interpolated pairs
    alphas: list[float]  # the interpolation steps
    models: dict[str, dict[str, Any]]  # run -> its measures (reconstruction, latent, noise, interpolation, posterior)
    # the analysis's seconds and peak memory (runtime.StageMeter); older files lack it: {}
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)

    def posterior(self, run: str) -> dict[str, Any]:
        """A VAE run's posterior measures (KL, active units); a ResultsError for a run without them."""
        try:
            return self.models[run]["posterior"]
        except KeyError:
            raise ResultsError(f"latent_metrics.json: no posterior measures for run '{run}'") from None


# What the probe records of each run's generations and test reconstructions per scorer seed (``guard``).
GUARD_KEYS = frozenset(
    {
        "generated_fld",
        "reconstructed_fld",
        "fld_floor",
        "generated_coverage",
        "reconstructed_coverage",
        "coverage_floor",
    }
)


@dataclasses.dataclass(frozen=True)
class ProbeMetrics(_Record):
    """``OUTPUT_ROOT/<phase>/probe/probe_metrics.json``: the diffusion probe's scores of each run,
    written again after each run (so ``experiments`` holds the runs probed so far)."""

    settings: dict[str, Any]  # probe.settings.ProbeSettings
    device: str
    precision: str
    data: dict[str, Any]  # the split's sizes, the resolution, what was scored against
    scorers: list[dict[str, Any]]  # each scorer's feature network
    layouts: dict[str, Any]  # the layouts' own high-frequency share
    experiments: dict[str, dict[str, Any]]  # run -> its scores (generated, reconstructed, guard, budgets, ...)
    timings: dict[str, Any]  # seconds per phase

    def generated(self, run: str) -> dict[str, Any]:
        """The scores of the layouts generated in ``run``'s latent space."""
        return self.experiments[run]["generated"]

    def budgets(self, run: str) -> dict[str, Any]:
        """The scores after each other denoiser budget (steps -> scores); empty where none was trained."""
        return self.experiments[run].get("budgets") or {}

    def guard(self, run: str) -> dict[str, Any] | None:
        """The run's generations against its test reconstructions, at equal numbers of layouts, under
        every scorer seed (``experiments.<run>.guard``: FLD and coverage of each, with floors); None in
        a file written before the probe measured it, which the decision flags (the guard is then
        not known to hold) rather than trip over. A ResultsError names a guard of another shape."""
        record = self.experiments[run].get("guard")
        if record is None:
            return None
        by_scorer = record.get("by_scorer") if isinstance(record, dict) else None
        if (
            not isinstance(by_scorer, dict)
            or not by_scorer
            or not all(isinstance(v, dict) and GUARD_KEYS <= set(v) for v in by_scorer.values())
        ):
            raise ResultsError(
                f"probe_metrics.json: experiments.{run}.guard.by_scorer should map each scorer seed to "
                f"{', '.join(sorted(GUARD_KEYS))} (as the probe writes it)"
            )
        return record


@dataclasses.dataclass(frozen=True)
class Decision(_Record):
    """``OUTPUT_ROOT/<phase>/decision.json``: the pre-registered rule's verdict on V1 against V2
    (``analysis.decision.decide``)."""

    choice: str | None  # "deterministic", "variational", or None without a primary endpoint
    verdict: str  # vae better / vae worse / inconclusive / no primary endpoint
    primary_endpoint: str
    chosen_experiment: str | None
    arms: dict[str, list[str]]  # the compared runs
    planned_runs: dict[str, list[str]]
    missing_runs: list[dict[str, Any]]  # runs.MissingRun: planned, not compared, and why
    evaluation_split: str
    summary: str
    reason: str
    data_sufficient: bool
    data_limits: list[str]
    criteria: dict[str, dict[str, Any]]  # criterion -> its interval, verdict, each arm's values
    flags: list[str]
    rule: dict[str, Any]  # decision.Rule
    protocol: dict[str, Any]  # what fixed the analysis before the data, and its sha256

    @property
    def primary(self) -> dict[str, Any] | None:
        """The primary endpoint's criterion; None where it was not measured (no probe)."""
        return self.criteria.get(self.primary_endpoint)
