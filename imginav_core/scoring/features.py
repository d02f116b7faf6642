"""The feature space the distribution scores are measured in: a small CNN trained on real layouts.

Inception features know photographs, not floor plans, and nothing can be downloaded here; so the
scorer trains its own network once on the reference layouts, with targets any layout has: room
or scene, each class's share of the area, which classes are present. Its global-pooled last
layer, standardised on the training layouts, is the feature space (``num_features`` wide).

The input is not RGB but a per-pixel encoding that registers both class and off-palette-ness:
a soft assignment to the 10 palette colours plus the distance to the nearest one. A real layout
encodes as one-hot + 0; a blurred one as mixtures along its edges; a noisy one with a distance
channel that real layouts never show. So muddy and noisy images move in feature space even
though the network never saw one.

The trained weights are cached under ``cache_dir``, keyed by the training layouts' content, the
resolution, the seed and the network's version; written whole or not at all.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..files import atomic_path, file_lock
from ..outputs import shown_path
from ..palette import NUM_CLASSES, PALETTE, PURITY_TOLERANCE, class_to_rgb
from .inputs import ReferenceSet

NET_VERSION = 1  # bump when the architecture, encoding or training changes: old caches are then ignored
NUM_FEATURES = 64
WORK_RESOLUTION = 64  # the encoding is area-pooled to at most this before the first convolution
EPOCHS = 12  # for up to SAMPLE_BUDGET / EPOCHS layouts; fewer epochs (at least 3) for more
SAMPLE_BUDGET = 24_000  # layouts seen in training: ~1 ms each at 64 px on one CPU thread
BATCH_SIZE = 16
LEARNING_RATE = 3e-3
# Softness of the palette assignment: half the purity tolerance, so a colour within the tolerance
# of a palette colour is (almost) all that colour, and the closest palette pair (40 apart per
# channel) never blends for an exact palette colour.
SOFTNESS = PURITY_TOLERANCE / 2
# The RGB distance that reads as 1.0 in the distance channel: the purity tolerance. The channel is
# 0 on every training layout, so the network never learns its weights: they stay at their seeded
# initial values, a fixed random projection of off-palette-ness into the features. At this scale
# a 1-pixel blur raises the Fréchet distance more than shuffling 8 x 8 blocks does; at 64 it
# raised it 3x less (synthetic layouts, 64 x 64).
DISTANCE_SCALE = PURITY_TOLERANCE


def palette_encoding(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, R, R) RGB in 0-255 (any dtype) -> (N, 11, R, R): soft assignment to the palette
    colours, then the distance to the nearest one (in units of DISTANCE_SCALE)."""
    pixels = rgb.float()
    palette = torch.tensor(PALETTE, dtype=torch.float32, device=pixels.device)
    # |x - p|^2 = |x|^2 - 2 x.p + |p|^2, the cross term as a 1x1 convolution: ~10x faster than
    # broadcasting (N, 10, 3, R, R)
    cross = F.conv2d(pixels, palette.view(NUM_CLASSES, 3, 1, 1))
    squared = (pixels.square().sum(1, keepdim=True) - 2 * cross + palette.square().sum(1).view(1, -1, 1, 1)).clamp_min(
        0
    )
    soft = torch.softmax(-squared / (2 * SOFTNESS**2), dim=1)
    distance = squared.amin(1, keepdim=True).sqrt() / DISTANCE_SCALE
    return torch.cat([soft, distance], dim=1)


def class_map_encoding(class_maps: torch.Tensor) -> torch.Tensor:
    """(N, R, R) class indices -> the encoding of their RGB (off-palette pixels as the black
    class_to_rgb draws them), by table lookup: what training feeds the network, without the
    colour arithmetic."""
    table = palette_encoding(torch.as_tensor(class_to_rgb(np.arange(256))).T.reshape(1, 3, 16, 16).float())
    table = table.reshape(NUM_CLASSES + 1, 256).T.to(class_maps.device)  # 256, 11
    return table[class_maps.long()].permute(0, 3, 1, 2)


class LayoutFeatureNet(nn.Module):
    """Encoding -> area pooling to <= WORK_RESOLUTION -> strided convolutions down to ~4 x 4 ->
    global average -> ``num_features``; three heads on top for training.

    Batch normalisation, not group normalisation: in evaluation mode it scales every image by the
    real layouts' statistics, so an image unlike them keeps its unusual activations instead of
    having them normalised away per image (and with group normalisation the room/scene head did
    not learn within the training budget here). ``forward``: (N, 3, R, R) RGB -> standardised features.
    """

    def __init__(self, resolution: int, num_features: int = NUM_FEATURES) -> None:
        super().__init__()
        self.resolution = resolution
        self.num_features = num_features
        self.work = min(resolution, WORK_RESOLUTION)
        stages = max(2, round(math.log2(self.work / 4)))
        widths = [min(num_features, 16 * 2**i) for i in range(stages - 1)] + [num_features]
        layers, channels = [], NUM_CLASSES + 1
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.trunk = nn.Sequential(*layers)
        self.scene_head = nn.Linear(num_features, 1)
        self.share_head = nn.Linear(num_features, NUM_CLASSES)
        self.presence_head = nn.Linear(num_features, NUM_CLASSES)
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))

    def pooled(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.pooled_encoding(palette_encoding(rgb))

    def pooled_encoding(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.work:
            x = F.adaptive_avg_pool2d(x, self.work)
        return self.trunk(x).mean((2, 3))

    def heads(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scene logit (N,), area-share logits (N, 10), presence logits (N, 10))."""
        return self.scene_head(pooled).squeeze(1), self.share_head(pooled), self.presence_head(pooled)

    def standardise(self, pooled: torch.Tensor) -> torch.Tensor:
        return (pooled - self.feature_mean) / self.feature_std

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.standardise(self.pooled(rgb))


@dataclass
class Embedding:
    """What the network says about a set of images, in their order."""

    features: np.ndarray  # (M, num_features) float64, standardised
    scene_probability: np.ndarray  # (M,)
    shares: np.ndarray  # (M, 10) predicted area shares
    presence: np.ndarray  # (M, 10) predicted probability that each class is present

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, index) -> Embedding:
        return Embedding(self.features[index], self.scene_probability[index], self.shares[index], self.presence[index])

    @classmethod
    def join(cls, parts: list[Embedding]) -> Embedding:
        """The embeddings of consecutive chunks of layouts, as one."""
        columns = ("features", "scene_probability", "shares", "presence")
        return cls(*(np.concatenate([getattr(p, column) for p in parts]) for column in columns))


# Pixels per batch through the network: the palette encoding of a batch is about 180 bytes a pixel
# before it is pooled (~190 MB), whatever the resolution: 128 layouts at 64 px, 64 at 128, 4 at 512.
EMBED_PIXELS = 2**20
EMBED_BATCH = 128


def embed_batch_size(resolution: int) -> int:
    return max(1, min(EMBED_BATCH, EMBED_PIXELS // (resolution * resolution)))


@torch.no_grad()
def embed(net: LayoutFeatureNet, rgb) -> Embedding:
    """Run ``net`` over (M, R, R, 3) uint8 RGB images in evaluation mode (an array, a tensor on any
    device, or anything that slices into arrays, as ``ReferenceSet.rgb_view()``), in batches sized
    to the resolution to bound the memory (each image's features depend on it alone)."""
    batch_size = embed_batch_size(rgb.shape[1])
    net.eval()
    device = next(net.parameters()).device
    parts = []
    for start in range(0, len(rgb), batch_size):
        batch = rgb[start : start + batch_size]
        batch = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
        pooled = net.pooled(batch.to(device).permute(0, 3, 1, 2))
        scene, shares, presence = net.heads(pooled)
        parts.append([net.standardise(pooled), torch.sigmoid(scene), torch.softmax(shares, 1), torch.sigmoid(presence)])
    return Embedding(*(torch.cat(column).double().cpu().numpy() for column in zip(*parts)))


def targets(reference: ReferenceSet) -> tuple[np.ndarray, np.ndarray]:
    """(area shares (N, 10) over the palette pixels, presence (N, 10) bool); computed once per
    reference set."""
    if "targets" not in reference.derived:
        counts = np.empty((len(reference), NUM_CLASSES))
        for start in range(0, len(reference), 256):  # one bincount per chunk: no (N, R, R) temporaries
            chunk = reference.class_maps[start : start + 256].reshape(-1, reference.resolution**2).astype(np.int64)
            offsets = (np.arange(len(chunk)) * 256)[:, None]
            per_value = np.bincount((chunk + offsets).ravel(), minlength=len(chunk) * 256).reshape(-1, 256)
            counts[start : start + 256] = per_value[:, :NUM_CLASSES]
        reference.derived["targets"] = counts / np.maximum(counts.sum(1, keepdims=True), 1), counts > 0
    return reference.derived["targets"]


def heldout_accuracy(net: LayoutFeatureNet, held: ReferenceSet, embedding: Embedding | None = None) -> dict:
    """How well the heads do on layouts the network did not train on: evidence that its features
    encode what a layout is, not noise."""
    embedding = embedding or embed(net, held.rgb_view())
    shares, presence = targets(held)
    return {
        "room_scene": float(np.mean((embedding.scene_probability > 0.5) == (held.labels == 1))),
        "presence": float(np.mean((embedding.presence > 0.5) == presence)),
        "area_share_mae": float(np.mean(np.abs(embedding.shares - shares))),
        "n": len(held),
    }


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 rotations and mirror images: a floor plan has no up."""
    x = torch.rot90(x, k % 4, dims=(2, 3))
    return x.flip(3) if k >= 4 else x


def epochs_for(n: int) -> int:
    return min(EPOCHS, max(3, math.ceil(SAMPLE_BUDGET / max(n, 1))))


def train_net(fit: ReferenceSet, seed: int = 0, device: str | torch.device = "cpu", log=print) -> LayoutFeatureNet:
    """Train the network on ``fit``'s class maps; deterministic given the seed (and thread count).

    The global torch random state is left as it was: everything random is drawn inside a fork.
    """
    if len(fit) < 2:
        raise ValueError(f"{fit.source}: need at least 2 layouts to train the feature network, have {len(fit)}")
    epochs = epochs_for(len(fit))
    shares, presence = targets(fit)
    labels = torch.as_tensor(fit.labels, dtype=torch.float32, device=device)
    shares_t = torch.as_tensor(shares, dtype=torch.float32, device=device)
    presence_t = torch.as_tensor(presence, dtype=torch.float32, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LayoutFeatureNet(fit.resolution).to(device)
        optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
        steps = epochs * math.ceil(len(fit) / BATCH_SIZE)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, LEARNING_RATE, total_steps=steps, pct_start=0.2)
        generator = torch.Generator().manual_seed(seed)
        net.train()
        for epoch in range(epochs):
            order = torch.randperm(len(fit), generator=generator)
            total = 0.0
            for start in range(0, len(fit), BATCH_SIZE):
                idx = order[start : start + BATCH_SIZE]
                k = int(torch.randint(8, (1,), generator=generator))
                class_maps = torch.from_numpy(fit.class_maps[idx.numpy()])  # read a batch at a time
                x = _dihedral(class_map_encoding(class_maps.to(device)), k)
                scene, share_logits, presence_logits = net.heads(net.pooled_encoding(x))
                loss = (
                    F.binary_cross_entropy_with_logits(scene, labels[idx])
                    + -(shares_t[idx] * F.log_softmax(share_logits, 1)).sum(1).mean()
                    + F.binary_cross_entropy_with_logits(presence_logits, presence_t[idx])
                )
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                total += float(loss.detach()) * len(idx)
            if epoch == 0 or epoch == epochs - 1:
                log(f"feature net epoch {epoch + 1}/{epochs}: loss {total / len(fit):.4f}")
    # Standardise on the training layouts: every feature then has unit spread on real layouts,
    # which KID's polynomial kernel (gamma = 1/d) and the k-NN distances assume.
    pooled = torch.as_tensor(embed(net, fit.rgb_view()).features, dtype=torch.float32, device=device)
    net.feature_mean.copy_(pooled.mean(0))
    net.feature_std.copy_(pooled.std(0).clamp_min(1e-6))
    net.eval()
    return net


def cache_key(fit: ReferenceSet, seed: int) -> str:
    """Changes with anything that changes the trained weights."""
    digest = hashlib.sha256(
        f"layout-features v{NET_VERSION} r{fit.resolution} s{seed} f{NUM_FEATURES} "
        f"e{EPOCHS}/{SAMPLE_BUDGET} b{BATCH_SIZE} l{LEARNING_RATE} w{WORK_RESOLUTION} "
        f"t{SOFTNESS} d{DISTANCE_SCALE}\n".encode()
    )
    for start in range(0, len(fit), 256):  # the bytes of every class map, without a copy of all of them
        digest.update(np.ascontiguousarray(fit.class_maps[start : start + 256]).tobytes())
    digest.update(np.ascontiguousarray(fit.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:20]


@dataclass
class FeatureModel:
    net: LayoutFeatureNet
    cache: str  # where the weights came from, for the log and the JSON
    fit_seconds: float  # training time (when this call trained), else as recorded in the cache
    seed: int | None = None  # the seed it was trained from


def load_or_train(
    fit: ReferenceSet,
    held: ReferenceSet,
    cache_dir: str | Path | None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log=print,
) -> FeatureModel:
    """The network for ``fit``: from ``cache_dir`` if trained before, else trained (and cached)."""
    if cache_dir is None:
        start = time.perf_counter()
        net = train_net(fit, seed, device, log=log)
        return FeatureModel(net, "trained (no cache folder)", time.perf_counter() - start, seed=seed)
    cache_dir = Path(cache_dir)
    key = cache_key(fit, seed)
    path = cache_dir / f"layout_features_{key}.pt"
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Jobs scoring against the same reference at once train it once; the others wait and load.
    with file_lock(cache_dir / f".layout_features_{key}.lock"):
        if path.is_file():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                net = LayoutFeatureNet(fit.resolution)
                net.load_state_dict(saved["state_dict"])
                net.to(device).eval()
                log(f"feature net loaded from {shown_path(path)}")
                return FeatureModel(net, f"loaded {shown_path(path)}", float(saved["fit_seconds"]), seed=seed)
            except Exception as err:  # noqa: BLE001 - an unreadable cache is retrained, never trusted
                log(f"feature net cache {shown_path(path)} unreadable ({type(err).__name__}: {err}); retraining")
        start = time.perf_counter()
        net = train_net(fit, seed, device, log=log)
        seconds = time.perf_counter() - start
        payload = {
            "version": NET_VERSION,
            "resolution": fit.resolution,
            "seed": seed,
            "n_fit": len(fit),
            "source": fit.source,
            "fit_seconds": seconds,
            "heldout_accuracy": heldout_accuracy(net, held),  # for whoever reads the file
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        log(f"feature net trained in {seconds:.1f} s, saved to {shown_path(path)}")
        return FeatureModel(net, f"trained, saved to {shown_path(path)}", seconds, seed=seed)
