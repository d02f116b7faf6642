"""What the analysis measures, in one record: written into the study's plan before anything runs
(``plan --set analysis.max_images=256``) and read back by the analysis. Torch-free, so that the
plan is written on a login node in a second."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError


@dataclass(frozen=True)
class AnalysisSettings:
    max_images: int = 512  # test layouts measured: a random subset drawn from ``seed`` (all if fewer)
    batch_size: int = 16  # layouts (or path frames) per model call at most ...
    chunk_pixels: int = 2**19  # ... and at most this many pixels per call (2 layouts at 512 x 512): bounds the memory
    pairs_per_kind: int = 2  # K pairs each of room-room, scene-scene, room-scene
    steps: int = 11  # T points on each path, alpha = 0, 0.1, ..., 1
    sigmas: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)  # latent noise, in each channel's own std
    neighbour_pool: int = 1024  # training layouts searched for each test latent's nearest one
    scorer: bool = True  # also judge in-between layouts with the layout scorer (fitted once, cached)
    seed: int = 0  # the layouts measured, the pairs, the noise partners and the latent noise
    frame_size: int = 128  # pixels of the explorer's frames
    device: str = "auto"  # auto (CUDA when present), cpu or cuda; changes no result

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        for name in ("max_images", "batch_size", "chunk_pixels", "pairs_per_kind", "steps", "neighbour_pool"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"analysis setting '{name}' = {value!r}: expected a positive integer")
        if self.max_images < 2:
            raise ConfigError(f"analysis setting 'max_images' = {self.max_images}: need at least 2 layouts")
        if self.steps < 3:
            raise ConfigError(f"analysis setting 'steps' = {self.steps}: a path needs its two ends and a middle")
        if not self.sigmas or any(s <= 0 for s in self.sigmas):
            raise ConfigError(f"analysis setting 'sigmas' = {self.sigmas}: expected noise levels > 0")


# What changes no result, so the protocol leaves it out: where the analysis runs and how much it
# holds at once (its chunks: every measure is the same whatever the chunk, a test holds it).
NOT_RESULTS = ("device", "batch_size", "chunk_pixels")
