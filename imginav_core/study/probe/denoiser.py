"""The probe's denoiser: the small latent diffusion model ImgiNav's later phases train, sized to
the latent grid, trained on one latent space with a fixed budget and seed.

A diffusers ``UNet2DModel`` predicts the noise (epsilon) of a ``DDPMScheduler`` with the cosine
schedule of 1000 steps; an EMA of its weights is what is evaluated and sampled, with
``DDIMScheduler``. Every random draw (batch rows, VAE posterior samples, noise, timesteps) comes
from one CPU generator saved in the checkpoint, so a killed run resumed from its last checkpoint
computes exactly what an uninterrupted one does, on any device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from ...errors import ResumeError
from ...files import kill_point
from ...training.checkpoints import load_checkpoint, save_checkpoint
from .latents import EncodedLayouts, Standardiser
from .settings import ProbeSettings

TRAIN_TIMESTEPS = 1000


def noise_schedule() -> DDPMScheduler:
    # Latents are not bounded to [-1, 1]: clipping the predicted sample would distort them.
    return DDPMScheduler(
        num_train_timesteps=TRAIN_TIMESTEPS,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=False,
    )


def unet_layout(grid: int, width: int) -> dict:
    """The UNet for a latent grid of ``grid`` x ``grid``: two resolutions for the demo's 4 x 4
    latents (a third would leave 1 x 1), three with self-attention on the lower two for the real
    32 x 32 latents."""
    if grid < 16:
        return {
            "block_out_channels": (width, 2 * width),
            "layers_per_block": 1 if grid <= 4 else 2,
            "down_block_types": ("DownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "UpBlock2D"),
        }
    return {
        "block_out_channels": (width, 2 * width, 2 * width),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    }


def build_denoiser(latent_shape: tuple[int, int, int], width: int) -> UNet2DModel:
    channels, grid, _ = latent_shape
    return UNet2DModel(
        sample_size=grid,
        in_channels=channels,
        out_channels=channels,
        norm_num_groups=min(32, width // 4),
        **unet_layout(grid, width),
    )


@dataclass
class DenoiserState:
    step: int = 0
    curve: list[list[float]] = field(default_factory=list)  # [step, mean training loss since the last point]
    seconds: float = 0.0  # training time, summed over resumptions
    running: float = 0.0  # training loss summed since the curve's last point
    counted: int = 0


def precision(device: torch.device) -> str:
    # bf16 where the GPU computes it natively (the same recipe for every latent space); fp32 elsewhere.
    return "bf16 autocast" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision(device) != "fp32")


def train_denoiser(
    latents: EncodedLayouts,
    standardiser: Standardiser,
    settings: ProbeSettings,
    seed: int,
    checkpoint: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    steps: int | None = None,
) -> tuple[UNet2DModel, DenoiserState]:
    """Train (or resume from ``checkpoint``) the denoiser on ``latents`` up to ``steps`` (default
    ``settings.steps``); returns the EMA model in eval mode and the training record. The
    checkpoint is rewritten every ``settings.checkpoint_every`` steps and at the end. A checkpoint
    of fewer steps is continued: training to N steps and then on to 2N computes exactly what
    training to 2N at once does (a constant learning rate; every draw from the saved generator)."""
    until = settings.steps if steps is None else steps
    torch.manual_seed(seed)  # the UNet's initial weights
    model = build_denoiser(latents.shape, settings.width).to(device)
    ema = EMAModel(model.parameters(), decay=settings.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    schedule = noise_schedule()
    state = DenoiserState()

    if checkpoint.is_file():
        saved = load_checkpoint(checkpoint, map_location=device)
        if saved["settings"] != settings.training_key() or saved["seed"] != seed:
            raise ResumeError(
                f"{checkpoint} was trained with other probe settings ({saved['settings']}, seed {saved['seed']}) "
                f"than now ({settings.training_key()}, seed {seed}); delete its folder to start again, or "
                "probe into another output root"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        ema.load_state_dict(saved["ema"])
        ema.to(device)
        generator.set_state(saved["generator"])
        state = DenoiserState(**{f.name: saved[f.name] for f in fields(DenoiserState)})
        if state.step > until:
            raise ResumeError(
                f"{checkpoint} holds a denoiser trained for {state.step} steps, past the {until} asked for now; "
                "delete its folder to start again"
            )
        if state.step < until:
            log(f"resuming the denoiser from step {state.step} of {until} ({checkpoint.name})")

    def save() -> None:
        save_checkpoint(
            checkpoint,
            {
                "settings": settings.training_key(),
                "seed": seed,
                **asdict(state),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict(),
                "generator": generator.get_state(),
            },
        )

    model.train()
    started = time.perf_counter()
    while state.step < until:
        rows = torch.randint(0, len(latents), (settings.batch_size,), generator=generator)
        z0 = standardiser.apply(latents.draw(rows, generator))
        noise = torch.randn(z0.shape, generator=generator)
        t = torch.randint(0, TRAIN_TIMESTEPS, (settings.batch_size,), generator=generator)
        z0, noise, t = z0.to(device), noise.to(device), t.to(device)
        noisy = schedule.add_noise(z0, noise, t)
        with _autocast(device):
            predicted = model(noisy, t).sample
        loss = (predicted.float() - noise).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.step(model.parameters())
        state.step += 1
        state.running, state.counted = state.running + loss.item(), state.counted + 1
        kill_point("probe_step")
        if state.step % settings.curve_every == 0 or state.step == until:
            state.curve.append([state.step, state.running / state.counted])
            state.running, state.counted = 0.0, 0
        if state.step % settings.checkpoint_every == 0 or state.step == until:
            now = time.perf_counter()
            state.seconds, started = state.seconds + now - started, now
            save()
    if not math.isfinite(state.curve[-1][1]):
        log(f"warning: the denoiser's training loss is {state.curve[-1][1]} at step {state.step}")
    ema.copy_to(model.parameters())
    return model.eval(), state


@torch.no_grad()
def heldout_losses(
    model: UNet2DModel, latents: torch.Tensor, levels: tuple[int, ...], seed: int, batch_size: int = 256
) -> dict[str, float]:
    """The epsilon-prediction loss on standardised held-out latents at fixed timesteps, with the
    same noise for every latent space (drawn from ``seed``)."""
    device = next(model.parameters()).device
    schedule = noise_schedule()
    generator = torch.Generator().manual_seed(seed)
    losses = {}
    for level in levels:
        noise = torch.randn(latents.shape, generator=generator)
        total = 0.0
        for start in range(0, len(latents), batch_size):
            z0, eps = latents[start : start + batch_size].to(device), noise[start : start + batch_size].to(device)
            t = torch.full((len(z0),), level, device=device, dtype=torch.long)
            with _autocast(device):
                predicted = model(schedule.add_noise(z0, eps, t), t).sample
            total += (predicted.float() - eps).pow(2).mean((1, 2, 3)).sum().item()
        losses[str(level)] = total / len(latents)
    return losses


@torch.no_grad()
def sample_latents(
    model: UNet2DModel, count: int, shape: tuple[int, int, int], ddim_steps: int, seed: int, batch_size: int = 256
) -> torch.Tensor:
    """``count`` standardised latents by deterministic DDIM (eta 0) from initial noise drawn from
    ``seed``: the same noise for every latent space of the same shape."""
    device = next(model.parameters()).device
    scheduler = DDIMScheduler.from_config(noise_schedule().config)
    scheduler.set_timesteps(ddim_steps)
    initial = torch.randn((count, *shape), generator=torch.Generator().manual_seed(seed))
    out = []
    for start in range(0, count, batch_size):
        x = initial[start : start + batch_size].to(device)
        for t in scheduler.timesteps:
            with _autocast(device):
                eps = model(x, t.to(device).expand(len(x))).sample
            x = scheduler.step(eps.float(), t, x).prev_sample
        out.append(x.float().cpu())
    return torch.cat(out)
