"""Every setting a study's plan takes, as one table (``python -m imginav_core settings``; the book's
settings page is this table, and a test keeps them equal).

A setting has one name: a config key (``training.lr``), ``probe.KEY`` or ``analysis.KEY``, given
once, when the study is planned (``plan --set KEY=VALUE``). Its meaning is written once, beside its
default: the comment on its line in the config files (``configs/``) or above its field in the
probe's and the analysis's settings (``study/probe/settings.py``, ``study/analysis/settings.py``);
this table reads them from there.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

from ..config import REPO_ROOT, flatten, load_config
from .analysis.settings import AnalysisSettings
from .arms import read_study_file
from .jobs import JOB_VARIABLES
from .plan import PLANNED_KEYS
from .probe.settings import ProbeSettings

FIELD = re.compile(r"^\s{4}(\w+): [^=]+= [^#]*?(?:#\s*(.*))?$")


def _yaml_comments(path: Path) -> dict[str, str]:
    """Each key's trailing comment in a YAML config file, by dotted key (nesting by indentation)."""
    comments, parents = {}, []
    for line in path.read_text().splitlines():
        match = re.match(r"^(\s*)([\w.]+):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
        if not match:
            continue
        depth = len(match[1]) // 2
        parents = parents[:depth] + [match[2]]
        if match[4]:
            comments[".".join(parents)] = match[4]
    return comments


def _field_comments(cls: type) -> dict[str, str]:
    """Each dataclass field's comment: on its line, else the comment lines just above it."""
    comments, above = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        match = FIELD.match(line)
        if match:
            comments[match[1]] = match[2] or " ".join(above)
        above = []
    return comments


def _cell(value) -> str:
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def settings_table() -> str:
    """Markdown: every setting a plan takes, its default (per arm where the arms differ) and its meaning."""
    study = read_study_file()
    configs = {label: load_config(arm.config) for label, arm in study.arms.items()}
    flat = {label: flatten(cfg.to_dict()) for label, cfg in configs.items()}
    comments: dict[str, str] = {}
    for path in sorted((REPO_ROOT / "configs").rglob("*.yaml")):
        comments.update({k: v for k, v in _yaml_comments(path).items() if k not in comments})
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    first = next(iter(flat.values()))
    for key in first:
        if key in PLANNED_KEYS or key == "version":  # the plan sets those; the version is the schema's
            continue
        values = {label: f[key] for label, f in flat.items()}
        if len(set(map(repr, values.values()))) == 1:
            default = _cell(first[key])
        else:
            default = ", ".join(f"{label} {_cell(v)}" for label, v in values.items())
        rows.append(f"| `{key}` | {default} | {comments.get(key, '')} |")
    for prefix, cls in (("probe", ProbeSettings), ("analysis", AnalysisSettings)):
        meanings = _field_comments(cls)
        for field in dataclasses.fields(cls):
            rows.append(f"| `{prefix}.{field.name}` | {_cell(field.default)} | {meanings.get(field.name, '')} |")
    lines = "\n".join(rows) + "\n"
    jobs = ["| variable | meaning |", "| --- | --- |"] + [f"| `{k}` | {v} |" for k, v in JOB_VARIABLES.items()]
    return lines + "\nWhat a job may take from its environment (nothing else):\n\n" + "\n".join(jobs) + "\n"
