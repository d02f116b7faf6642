"""Shared by the tests: the experiment configs and a config shrunk to run in seconds."""

from __future__ import annotations

import csv
from pathlib import Path

from imginav_core import load_config
from imginav_core.training.metrics_csv import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "configs/phase1_2/V1_deterministic.yaml"
V2 = ROOT / "configs/phase1_2/V2_vae_light.yaml"
V1_NAME, V2_NAME = load_config(V1).name, load_config(V2).name  # the experiments' folder and file names
PHASE = load_config(V1).phase  # the phase folder under output_root
# The real manifest's header (book/using/probe.md, "The data"), written out so a change of the reader's columns shows.
MANIFEST_HEADER = "scene_id,type,room_id,layout_path,is_empty\n"


def run_dir(cfg) -> Path:
    """The run folder, as the README's outputs table documents it (spelled here, independently of
    imginav_core.outputs, so that a changed name shows)."""
    return Path(cfg.output_root) / "experiments" / cfg.name


def phase_dir(cfg) -> Path:
    return Path(cfg.output_root) / cfg.phase


def small_config(path: Path, output_root: Path, **overrides):
    """An experiment config shrunk to seconds on a CPU."""
    values = {
        "output_root": str(output_root),
        "data.resolution": 32,
        "data.synthetic_samples": 48,
        "data.num_workers": 0,
        "training.epochs": 1,
        "training.batch_size": 8,
        "training.device": "cpu",
    }
    values.update(overrides)
    return load_config(path, values)


# A model of a few thousand parameters, for tests about files and messages rather than learning.
TINY_MODEL = {
    "model.base_channels": 8,
    "model.latent_channels": 4,
    "model.norm_groups": 4,
    "model.downsampling_steps": 2,
}


def metrics_rows(path: Path, timing: bool = True) -> list[dict[str, str]]:
    """A metrics CSV's rows; ``timing=False`` drops the wall-clock columns, the only ones that
    differ between otherwise identical runs."""
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if timing or k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def config_file(path: Path, base: Path, settings: dict) -> Path:
    """A complete config file at ``path``: the experiment ``base`` with dotted ``settings`` (what
    ``python -m imginav_core train`` takes; a study's runs get theirs from ``plan``)."""
    from imginav_core.config import write_config

    write_config(load_config(base, {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()}), path)
    return path
