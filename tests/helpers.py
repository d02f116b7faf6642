"""Shared by the tests: the experiment configs and a config shrunk to run in seconds."""
from __future__ import annotations

from pathlib import Path

from imginav_core import load_config

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "configs/phase1_2/V1_deterministic.yaml"
V2 = ROOT / "configs/phase1_2/V2_vae_light.yaml"


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
TINY_MODEL = {"model.base_channels": 8, "model.latent_channels": 4, "model.norm_groups": 4,
              "model.downsampling_steps": 2}
