"""The record that fixes the analysis before the data (``protocol``): the rule, the criteria, the
settings and the study plan, hashed, with the code's commit."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config import REPO_ROOT, parse_yaml
from ..plan import PlannedRun, arm_names, decision_arms, study_file
from .criteria import PRIMARY, Rule, rule_criteria

if TYPE_CHECKING:
    from ..results import ProbeMetrics
    from .study import Study


def git_commit(root: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """(the checkout's commit, whether tracked files differ from it); (None, None) outside a git
    checkout or without git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def plan_record(
    plan: list[PlannedRun], plan_file: str | Path | None = None, content: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The study plan as the protocol records it: the plan file's content (its keys, not its
    text: comments do not change the protocol; ``content``: as the study recorded it, else read
    from ``plan_file``), the seeds planned (the file's or IMGINAV_SEEDS'), and each arm's planned
    comparison runs (of the two arms the decision compares)."""
    path = Path(plan_file or study_file())
    return {
        "file": path.name,
        "content": parse_yaml(path.read_text(), str(path)) if content is None else content,
        "seeds": sorted({run.seed for run in plan if not run.sweep}),
        "runs": {label: arm_names(plan, label) for label in decision_arms(path)},
    }


def protocol(
    rule: Rule, study: Study, probe: ProbeMetrics | None, plan: dict[str, Any] | None, root: Path = REPO_ROOT
) -> dict[str, Any]:
    """What fixes the analysis before the data: the rule, the criteria (name, role, direction,
    margin, relative or not, the items resampled), the analysis settings, the probe's settings and
    the study plan; ``sha256`` over their canonical JSON (sorted keys, no spaces), so that two
    decisions made under the same protocol carry the same hash, and ``commit``, the code's."""
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
        for measure, (key, denominator), margin in rule_criteria(
            rule, with_realism="nn_midpoint_realism" in study.models[0].per_image
        )
    ]
    primary = {"name": PRIMARY.name, "role": PRIMARY.role, "better": PRIMARY.better, "margin": None}
    parts = {
        "rule": asdict(rule),
        "criteria": [primary | {"relative": False, "items": "run", "score": "probe FLD"}, *criteria],
        "analysis_settings": asdict(study.settings),
        "evaluation_split": study.evaluation_split,
        "probe_settings": None if probe is None else probe.settings,
        "study_plan": plan,
    }
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    commit, uncommitted = git_commit(root)
    return {
        "sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "commit": commit,
        "uncommitted_changes": uncommitted,
        "parts": json.loads(canonical),
    }
