"""What the diffusion probe does, in one record: the same for every latent space it compares.

Torch-free, so that the notebook parameters (``parameters.PROBE``) take their defaults from here
without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ...errors import ConfigError


@dataclass(frozen=True)
class ProbeSettings:
    # The denoiser's training budget: the same for every latent space.
    steps: int = 15000
    # A second, longer budget: each denoiser is trained on from ``steps`` to this many steps (0: twice
    # ``steps``) and generates and is scored again, so that a budget that happens to favour one
    # latent space shows (continuing costs the difference, not the whole).
    second_steps: int = 0
    batch_size: int = 64  # latents per denoiser step
    lr: float = 2e-4  # the denoiser's AdamW learning rate
    # Base channels of the UNet; its depth follows the latent grid (denoiser.unet_layout).
    width: int = 128
    ema_decay: float = 0.999  # the denoiser's weights averaged over steps (its samples are the average's)
    # Generated layouts per probe seed, sampled with DDIM from the same initial noise for every
    # latent space; all seeds' samples are scored together (bootstrap CIs over samples).
    samples: int = 1000
    # Denoisers trained per run. One: the study's replicates are its training seeds (each arm is
    # several runs, each probed), which vary what the probe compares, the latent space, and not
    # only the denoiser's initialisation.
    seeds: int = 1
    ddim_steps: int = 50  # DDIM sampling steps
    bootstrap: int = 200  # resamples of each score's 95 % interval
    # Feature networks (seeds seed, seed + 1, ...) the generated layouts are scored by: the first
    # gives the full score set, every one its FLD, so that the scorer's own seed is seen to vary it.
    scorer_seeds: int = 3
    # Timesteps (of 1000) where the held-out denoising loss is measured.
    noise_levels: tuple[int, ...] = (50, 200, 500, 800, 950)
    loss_every: int = 0  # steps per point of the loss curve (mean training loss over them); 0: steps / 100
    checkpoint_every: int = 1000  # steps between resumable checkpoints
    device: str = "auto"  # auto (CUDA when present), cpu, cuda or cuda:N; changes no result
    seed: int = 0  # the first probe seed; seed k is seed + k

    def __post_init__(self) -> None:
        positive = (
            "steps",
            "batch_size",
            "width",
            "samples",
            "seeds",
            "ddim_steps",
            "checkpoint_every",
            "scorer_seeds",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"probe setting '{name}' = {value!r}: expected a positive integer")
        if not 0 < self.lr < 1:
            raise ConfigError(f"probe setting 'lr' = {self.lr!r}: expected a learning rate between 0 and 1")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"probe setting 'ema_decay' = {self.ema_decay!r}: expected 0 <= decay < 1")
        if not isinstance(self.second_steps, int) or isinstance(self.second_steps, bool):
            raise ConfigError(f"probe setting 'second_steps' = {self.second_steps!r}: expected an integer")
        if self.second_steps and self.second_steps <= self.steps:
            raise ConfigError(
                f"probe setting 'second_steps' = {self.second_steps}: expected more than 'steps' = {self.steps} "
                "(the second budget continues the first), or 0 for twice 'steps'"
            )
        if not isinstance(self.loss_every, int) or self.loss_every < 0:
            raise ConfigError(f"probe setting 'loss_every' = {self.loss_every!r}: expected 0 (automatic) or more")
        if self.samples < 2:
            raise ConfigError(f"probe setting 'samples' = {self.samples}: need at least 2 generated layouts to score")
        if self.width % 8:
            raise ConfigError(f"probe setting 'width' = {self.width}: expected a multiple of 8 (GroupNorm groups)")
        if any(not 0 <= t < 1000 for t in self.noise_levels):
            raise ConfigError(f"probe setting 'noise_levels' = {self.noise_levels}: timesteps are 0..999")

    @property
    def curve_every(self) -> int:
        """Steps per point of the loss curve: about 100 points when not set."""
        return self.loss_every or max(1, self.steps // 100)

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]

    @property
    def scorer_seed_list(self) -> list[int]:
        """The feature networks' seeds; the first is the one the analysis scores with."""
        return [self.seed + k for k in range(self.scorer_seeds)]

    @property
    def budgets(self) -> list[int]:
        """The denoiser's two training budgets, in steps: the first, then the one it is trained on to."""
        return [self.steps, self.second_steps or 2 * self.steps]

    def training_key(self) -> dict:
        """What a resumed denoiser must share with the checkpoint it resumes: everything that
        changes what is computed at each step (not the device, nor the number of steps: a
        denoiser is continued from one budget to the next)."""
        key = {k: v for k, v in asdict(self).items() if k in ("batch_size", "lr", "width", "ema_decay")}
        return {**key, "curve_every": self.curve_every}

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


DEFAULTS = ProbeSettings()


# What changes no result, so the protocol leaves it out: where the probe runs, and how often a
# denoiser saves a checkpoint to resume from (a resumed denoiser ends where an uninterrupted one does).
NOT_RESULTS = ("device", "checkpoint_every")
