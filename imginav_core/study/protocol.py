"""The protocol: what decides the study, written with its plan before anything runs, and the check
that the decision kept to it (pre-registration).

``protocol.json`` (``OUTPUT_ROOT/<phase>/``) holds, hashed:
- every rule threshold and every choice the primary endpoint makes (``Rule``: margins, floors,
  the interval's level, the scale, the collapse thresholds; the scorer seeds from the probe's
  settings), and the criteria with their direction, margin and scale;
- every setting that changes a result: each run's config (training and data: batch size, epochs,
  seeds, split...), the probe's settings (steps, batch size, samples...), the analysis's (how many
  test layouts, pairs, noise levels, its seed);
and leaves out what changes no result: the device, thread counts, data-loader workers, the cache
folder, the chunking of the evaluation, how often sample grids are drawn. Paths under the output
root are written relative to it, so a copied study keeps its hash.

The decision builds the same record from what it actually used -- the rule in the code now, the
runs' configs as they trained, the probe's settings as the probe recorded them, the analysis's
settings -- and compares (``registration``): the same hash is "pre-registered"; a different one
makes the decision exploratory, each changed field named (old -> new). Code changes since the
plan (the commit and a digest of the package's files, both recorded) are stated on their own
line: the code may be fixed without changing what decides. A study without a protocol (one
planned by earlier code) is "not pre-registered".
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import REPO_ROOT, Config, flatten
from ..files import write_text_atomic
from .analysis.criteria import PRIMARY, Rule, planned_primary_effect, rule_criteria
from .analysis.settings import NOT_RESULTS as ANALYSIS_NOT_RESULTS
from .analysis.settings import AnalysisSettings
from .probe.settings import NOT_RESULTS as PROBE_NOT_RESULTS

if TYPE_CHECKING:
    from .plan import StudyPlan

PROTOCOL_FORMAT = 1
# Config keys that change no result: where a run writes and runs, and how fast.
CONFIG_NOT_RESULTS = (
    "output_root",
    "training.device",
    "data.num_workers",
    "data.cache_dir",
    "training.sample_interval",
)


def _relative(value: Any, root: Path) -> Any:
    """A path under the output root as ``OUTPUT_ROOT/...``: the protocol of a copied study is the same."""
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value).resolve()
        if path.is_relative_to(root):
            return str(Path("OUTPUT_ROOT") / path.relative_to(root))
    return value


def run_settings(cfg: Config, root: Path) -> dict[str, Any]:
    """A run's config as the protocol records it: the keys that change a result."""
    return {k: _relative(v, root) for k, v in flatten(cfg.to_dict()).items() if k not in CONFIG_NOT_RESULTS}


def build_protocol(
    plan: StudyPlan,
    *,
    rule: Rule | None = None,
    configs: dict[str, Config] | None = None,
    probe: dict[str, Any] | None = None,
    analysis: AnalysisSettings | None = None,
) -> dict[str, Any]:
    """The protocol of ``plan``; each part given is what was used instead of what was planned (the
    decision's side: ``configs`` by run name, the probe's recorded settings, the analysis's)."""
    rule = rule or Rule()
    configs = {**plan.configs, **(configs or {})}
    probe = {k: v for k, v in (probe or plan.probe.to_json()).items() if k not in PROBE_NOT_RESULTS}
    analysis = {k: v for k, v in asdict(analysis or plan.analysis).items() if k not in ANALYSIS_NOT_RESULTS}
    criteria = [
        {
            "name": measure.name,
            "role": measure.role,
            "better": measure.better,
            "margin": margin,
            "relative": measure.relative,
            "items": measure.per,
            "numerator": key,
            "denominator": denominator,
        }
        for measure, (key, denominator), margin in rule_criteria(rule, with_realism=bool(analysis.get("scorer")))
    ]
    scorer_seeds = [int(probe.get("seed", 0)) + k for k in range(int(probe.get("scorer_seeds", 1)))]
    protocol = {
        "format": PROTOCOL_FORMAT,
        "study": {
            "arms": {label: {"config": arm.config.name} for label, arm in plan.study.arms.items()},
            "decision": list(plan.study.decision),
            "seeds": plan.seeds,
            "sweep": plan.sweep,
            "kld_sweep": plan.study.kld_sweep if plan.sweep else [],
        },
        "runs": {
            run.name: {"arm": run.arm, "seed": run.seed, "kld": run.kld, "sweep": run.sweep}
            | {"config": run_settings(configs[run.name], plan.root)}
            for run in plan.runs
        },
        "probe": probe,
        "analysis": analysis,
        "rule": asdict(rule),
        "primary": {
            "name": PRIMARY.name,
            "meaning": PRIMARY.meaning,
            "better": PRIMARY.better,
            "relative": PRIMARY.relative,
            "level": rule.primary_level,
            "scale": rule.primary_scale,
            "items": "runs x scorer networks" if rule.primary_scorer_variance else "runs",
            "scorer_seeds": scorer_seeds,
            # what this design can see, both ways, from the seed spread it assumes (before the data)
            "design": design(plan, rule, len(scorer_seeds)),
        },
        "criteria": criteria,
    }
    return json.loads(json.dumps(protocol, default=str))  # plain JSON data, as it is written and read back


def design(plan: StudyPlan, rule: Rule, scorer_seeds: int) -> dict[str, Any] | None:
    """The primary's detectable ratio both ways for the plan's seeds per arm (``planned_primary_effect``:
    from an assumed seed spread on the log scale, named with its source); None with one seed per arm,
    whose spread no interval can know."""
    seeds = min(len(plan.arm_runs(label)) for label in plan.study.decision)
    return planned_primary_effect(seeds, scorer_seeds=scorer_seeds, rule=rule) if seeds > 1 else None


def digest(protocol: dict[str, Any]) -> str:
    """sha256 of the protocol's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(protocol, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def code_record(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The code as it is now: its git commit, whether tracked files differ from it, and a digest of
    the package's files (what changed without a commit changes it too)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    files = sorted((root / "imginav_core").rglob("*.py"))
    package = hashlib.sha256()
    for path in files:
        package.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return {
        "commit": commit,
        "uncommitted_changes": None if status is None else bool(status),
        "package_sha256": package.hexdigest(),
    }


def protocol_path(plan: StudyPlan) -> Path:
    return plan.outputs.phase_dir / "protocol.json"


def write_protocol(plan: StudyPlan) -> Path:
    """Write the plan's protocol, hashed, with the code that wrote it."""
    protocol = build_protocol(plan)
    record = {"sha256": digest(protocol), "written": plan.written, "code": plan.code, "protocol": protocol}
    path = protocol_path(plan)
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def read_protocol(plan: StudyPlan) -> dict[str, Any] | None:
    """The protocol written with the plan; None for a study planned by earlier code (it has none)."""
    path = protocol_path(plan)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or not {"sha256", "protocol", "code"} <= set(record):
        raise ValueError(f"{path}: not a protocol as the plan writes it (keys sha256, protocol, code)")
    return record


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each field that differs between two protocols, 'field: old -> new' (a criterion by its name)."""

    def keyed(protocol: dict[str, Any]) -> dict[str, Any]:
        protocol = dict(protocol)
        protocol["criteria"] = {c["name"]: c for c in protocol.get("criteria", [])}
        return _flat(protocol)

    a, b = keyed(old), keyed(new)
    return [
        f"{k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def registration(
    plan: StudyPlan, current: dict[str, Any] | None, off_plan: list[str], deviations: list[str] = ()
) -> dict[str, Any]:
    """The decision's protocol block: its status ("pre-registered", "exploratory", "not
    pre-registered"), the hashes, each changed field, the runs trained off their planned config
    (``off_plan``: 'NAME: key old -> new'), what this analysis did that the plan does not foresee
    (``deviations``: an unfinished run compared, no probe), and the code since the plan, on a line of
    its own. ``current``: the protocol of what the decision used (None: a plan without configs)."""
    recorded = read_protocol(plan) if current is not None else None
    now = code_record()
    block: dict[str, Any] = {
        "sha256": digest(current) if current else None,
        "runs_off_plan": off_plan,
        "deviations": list(deviations),
        "code": now,
        "parts": current,
    }
    if recorded is None:
        return block | {
            "status": "not pre-registered",
            "planned_sha256": None,
            "changes": [],
            "line": "Not pre-registered: this study's plan was written without a protocol (by earlier code).",
            "code_line": "",
        }
    changed = changes(recorded["protocol"], current) + list(deviations)
    status = "pre-registered" if not changed else "exploratory"
    then = recorded["code"] or {}
    same_code = then.get("package_sha256") == now["package_sha256"]
    code_line = (
        f"The code is the one that wrote the plan (commit {str(then.get('commit'))[:12]})."
        if same_code
        else f"The code changed since the plan: commit {str(then.get('commit'))[:12]} -> {str(now['commit'])[:12]}, "
        f"package digest {str(then.get('package_sha256'))[:12]} -> {now['package_sha256'][:12]}"
        + (" (with uncommitted changes)" if now["uncommitted_changes"] else "")
        + "; what decides is compared field by field above, so this alone changes no status."
    )
    if status == "pre-registered":
        line = (
            "Pre-registered: the decision kept to the protocol written with the plan "
            f"(sha256 {recorded['sha256'][:12]})."
        )
    else:
        line = (
            f"Exploratory: the decision departs from the protocol written with the plan (sha256 "
            f"{recorded['sha256'][:12]}, now {block['sha256'][:12]}) in {len(changed)} field(s): "
            + "; ".join(changed[:6])
            + ("; ..." if len(changed) > 6 else "")
        )
    return block | {
        "status": status,
        "planned_sha256": recorded["sha256"],
        "changes": changed,
        "line": line,
        "code_line": code_line,
    }
