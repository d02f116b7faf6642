"""ImgiNav Phase 1.2: deterministic vs variational autoencoders for top-down layout images.

The public API the notebooks use::

    from imginav_core import load_config, build_model, train
    cfg = load_config("configs/phase1_2/V2_vae_light.yaml", overrides={"training.epochs": 1})
    model = build_model(cfg)
    run_dir = train(cfg)

and Phase 1.3's (book/using/phase1_3.md)::

    from imginav_core import load_autoencoder, load_latent_stats
    ae = load_autoencoder("outputs/experiments/phase1_2_AE_V1_deterministic")
    latent = ae.encode_png("layout.png").mean             # 1 x C x h x w
    z = load_latent_stats("outputs/phase1_2_vae_test/layout_embeddings").standardise(latent)

``build_model``, ``train``, ``load_autoencoder``, ``export_latents`` and ``load_latent_stats`` are
imported on first use: importing the package (and so ``python -m imginav_core --help``) does not
load torch.
"""

from . import losses  # noqa: F401  (torch-free: hands the config its list of loss terms, the loss keys)
from .config import Config, load_config
from .errors import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "build_model",
    "train",
    "load_autoencoder",
    "export_latents",
    "load_latent_stats",
]


def __getattr__(name: str):
    if name == "build_model":
        from .model import build_model

        return build_model
    if name == "train":
        from .training import train

        return train
    if name == "load_autoencoder":
        from .autoencoder import load_autoencoder

        return load_autoencoder
    if name in ("export_latents", "load_latent_stats"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'imginav_core' has no attribute {name!r}")
