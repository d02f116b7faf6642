"""ImgiNav Phase 1.2: deterministic vs variational autoencoders for top-down layout images.

The public API the notebooks use::

    from imginav_core import load_config, build_model, train
    cfg = load_config("configs/phase1_2/V2_vae_light.yaml", overrides={"training.epochs": 1})
    model = build_model(cfg)
    run_dir = train(cfg)
"""

from .config import Config, ConfigError, load_config
from .model import build_model
from .train import train

__all__ = ["Config", "ConfigError", "load_config", "build_model", "train"]
