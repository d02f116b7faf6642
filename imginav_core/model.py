"""The layout autoencoder: a convolutional encoder, a Gaussian posterior for the VAE, and a
decoder with three heads (RGB, segmentation, room/scene classification).

"Deterministic or variational" is decided in one place, ``LayoutAutoencoder.posterior``: the
encoder's output is either the mean and log-variance of a ``DiagonalGaussian`` (the VAE) or the
latent itself, a point-mass posterior whose sample is its mean and whose KL is 0 (the idea of
diffusers' ``DiagonalGaussianDistribution(deterministic=True)``). Decoder, losses and analysis
treat both alike; no caller branches on the encoder type.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Config, ModelConfig
from .palette import NUM_CLASSES

NUM_TYPES = 2  # room, scene


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


def _conv_block(c_in: int, c_out: int, groups: int, *, down: bool = False, up: bool = False) -> nn.Sequential:
    if down:
        conv = nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
    elif up:
        conv = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
    else:
        conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
    return nn.Sequential(conv, _norm(c_out, groups), nn.SiLU())


class DiagonalGaussian:
    """The posterior q(z|x) = N(mean, exp(logvar)), element-wise; with ``logvar`` None a point
    mass at ``mean`` (the deterministic encoder): ``sample()`` = ``mode()`` = mean, KL 0."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor | None = None):
        self.mean = mean
        # Clamped as in latent-diffusion autoencoders: keeps exp() finite early in training.
        self.logvar = None if logvar is None else logvar.clamp(-30.0, 20.0)

    @property
    def deterministic(self) -> bool:
        return self.logvar is None

    def sample(self) -> torch.Tensor:
        if self.logvar is None:
            return self.mean
        return self.mean + torch.exp(0.5 * self.logvar) * torch.randn_like(self.mean)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl_elements(self) -> torch.Tensor:
        """KL(q || N(0, I)) of each latent element, ``-0.5 * (1 + logvar - mean^2 - exp(logvar))``,
        in float32 (or float64) whatever precision the encoder ran in; 0 for a point mass, which
        no KL weight may regularise (the config refuses ``loss.kld`` > 0 without a VAE)."""
        mean = self.mean if self.mean.dtype == torch.float64 else self.mean.float()
        if self.logvar is None:
            return torch.zeros_like(mean)
        logvar = self.logvar.to(mean.dtype)
        return -0.5 * (1.0 + logvar - mean.pow(2) - logvar.exp())

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) averaged over every latent element of the batch (book/using/network.md)."""
        if self.logvar is None:
            return self.mean.new_zeros((), dtype=torch.float32)
        return self.kl_elements().mean()


class Encoder(nn.Module):
    """The Phase 1.1 encoder (book/using/network.md): ``downsampling_steps`` x [3x3 conv, GN, SiLU, 4x4
    stride-2 conv, GN, SiLU], channels ``base_channels * 2**step``; then a 3x3 conv, GN, SiLU at
    the latent resolution. ``forward`` returns those features; the 1x1 convs on top of them,
    ``to_mean`` and (the VAE only) ``to_logvar``, are applied by ``LayoutAutoencoder.posterior``,
    the one place that decides between a point mass and a Gaussian."""

    def __init__(self, m: ModelConfig):
        super().__init__()
        blocks, c_in = [], 3
        for step in range(m.downsampling_steps):
            c_out = m.base_channels * 2**step
            blocks += [_conv_block(c_in, c_out, m.norm_groups), _conv_block(c_out, c_out, m.norm_groups, down=True)]
            c_in = c_out
        blocks.append(_conv_block(c_in, c_in, m.norm_groups))
        self.blocks = nn.Sequential(*blocks)
        # Two separate 1x1 convs on the same features, as Phase 1.1 measured; the deterministic
        # encoder has no log-variance to predict, so no parameters for one.
        self.to_mean = nn.Conv2d(c_in, m.latent_channels, kernel_size=1)
        self.to_logvar = nn.Conv2d(c_in, m.latent_channels, kernel_size=1) if m.variational else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _head(channels: int, out_channels: int, groups: int) -> nn.Sequential:
    """[3x3 conv, GN, SiLU, 3x3 conv]: the Phase 1.1 RGB and segmentation heads, without any final
    activation (the RGB head adds its tanh; segmentation emits logits for the cross-entropy)."""
    return nn.Sequential(
        *_conv_block(channels, channels, groups), nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)
    )


class Decoder(nn.Module):
    """The Phase 1.1 decoder (book/using/network.md): a 3x3 conv from the latent to the encoder's widest
    channels, GN, SiLU; then per step only a 4x4 stride-2 transposed conv halving the channels, GN,
    SiLU (256 -> 128 -> 64 -> 32 -> 16 for V1 and V2: ``base_channels / 2`` at full resolution); three
    heads on those full-resolution features."""

    def __init__(self, m: ModelConfig):
        super().__init__()
        c = m.base_channels * 2 ** (m.downsampling_steps - 1)
        self.from_latent = _conv_block(m.latent_channels, c, m.norm_groups)
        blocks = []
        for _ in range(m.downsampling_steps):
            blocks.append(_conv_block(c, c // 2, m.norm_groups, up=True))
            c //= 2
        self.blocks = nn.Sequential(*blocks)
        self.rgb_head = nn.Sequential(*_head(c, 3, m.norm_groups), nn.Tanh())
        self.segmentation_head = _head(c, NUM_CLASSES, m.norm_groups)  # logits: cross-entropy applies the softmax
        self.classification_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, NUM_TYPES))

    def forward(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.blocks(self.from_latent(latent))
        return {
            "rgb": self.rgb_head(features),
            "segmentation": self.segmentation_head(features),  # logits
            "classification": self.classification_head(features),  # logits
        }


class LayoutAutoencoder(nn.Module):
    def __init__(self, m: ModelConfig):
        super().__init__()
        self.variational = m.variational
        self.latent_channels = m.latent_channels
        self.downsampling_factor = 2**m.downsampling_steps
        self.encoder = Encoder(m)
        self.decoder = Decoder(m)

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) of images ``x`` in [-1, 1]: a Gaussian for the VAE, a point mass otherwise."""
        features = self.encoder(x)
        mean = self.encoder.to_mean(features)
        if not self.variational:
            return DiagonalGaussian(mean)
        return DiagonalGaussian(mean, self.encoder.to_logvar(features))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent of images ``x`` in [-1, 1]: the posterior's mode (the VAE's mean)."""
        return self.posterior(x).mode()

    def decode(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decoder(latent)

    def forward(self, x: torch.Tensor) -> dict:
        """Encode and decode. In training mode the decoder sees a posterior sample, in eval mode
        its mode (for the deterministic encoder both are the latent itself). Returns the three
        heads, ``latent`` and ``posterior`` (a ``DiagonalGaussian``)."""
        posterior = self.posterior(x)
        latent = posterior.sample() if self.training else posterior.mode()
        return {**self.decoder(latent), "latent": latent, "posterior": posterior}


def build_model(cfg: Config | ModelConfig) -> LayoutAutoencoder:
    """The autoencoder a config describes (weights freshly initialised)."""
    return LayoutAutoencoder(cfg.model if isinstance(cfg, Config) else cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
