"""ImgiNav Phase 1.2: deterministic vs variational autoencoders for top-down layout images.

The public API the notebooks use::

    from imginav_core import load_config, build_model, train
    cfg = load_config("configs/phase1_2/V2_vae_light.yaml", overrides={"training.epochs": 1})
    model = build_model(cfg)
    run_dir = train(cfg)

``build_model`` and ``train`` are imported on first use: importing the package (and so
``python -m imginav_core --help``) does not load torch.
"""

from . import losses  # noqa: F401  (torch-free: hands the config its list of loss terms, the loss keys)
from .config import Config, load_config
from .errors import ConfigError

__all__ = ["Config", "ConfigError", "load_config", "build_model", "train"]


def __getattr__(name: str):
    if name == "build_model":
        from .model import build_model

        return build_model
    if name == "train":
        from .training import train

        return train
    raise AttributeError(f"module 'imginav_core' has no attribute {name!r}")
