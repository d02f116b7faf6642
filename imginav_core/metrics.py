"""Reconstruction metrics, accumulated on the device and read out once per pass.

- MSE: mean squared error of the RGB head in the model's [-1, 1] range (the loss's own scale,
  as in the published numbers).
- PSNR: ``10 log10(1 / mse)`` per image with images in [0, 1], averaged over images.
- Segmentation: a confusion matrix over valid (in-palette) pixels gives pixel accuracy
  (``trace / total``) and mIoU (mean over classes present in target or prediction of
  ``TP / (TP + FP + FN)``).
- Classification accuracy of the room/scene head.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .palette import IGNORE_INDEX, NUM_CLASSES


def psnr_per_image(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image of a batch of [-1, 1] images (compared in [0, 1])."""
    mse = ((prediction.float() - target.float()) / 2.0).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def confusion(prediction: torch.Tensor, class_map: torch.Tensor) -> torch.Tensor:
    """(NUM_CLASSES, NUM_CLASSES) counts, rows = target class, columns = predicted class."""
    valid = class_map != IGNORE_INDEX
    index = class_map[valid] * NUM_CLASSES + prediction[valid]
    return torch.bincount(index, minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)


def miou(matrix: torch.Tensor) -> float:
    matrix = matrix.double()
    tp = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


def pixel_accuracy(matrix: torch.Tensor) -> float:
    total = matrix.sum()
    return float(matrix.diag().sum().double() / total) if total > 0 else float("nan")


class MetricSums:
    """Sums over a pass (losses weighted by batch size, per-image PSNR, confusion counts),
    kept on the device: adding a batch never waits for the GPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.images = torch.zeros((), dtype=torch.float64, device=device)
        self.matrix = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64, device=device)
        self.correct = torch.zeros((), dtype=torch.float64, device=device)
        self.psnr = torch.zeros((), dtype=torch.float64, device=device)

    def add_losses(self, losses: dict[str, torch.Tensor], batch: int) -> None:
        for name, value in losses.items():
            contribution = value.detach().double() * batch
            self.sums[name] = self.sums[name] + contribution if name in self.sums else contribution
        self.images += batch

    def add_outputs(
        self, outputs: dict[str, torch.Tensor], rgb: torch.Tensor, class_map: torch.Tensor, label: torch.Tensor
    ) -> None:
        self.psnr += psnr_per_image(outputs["rgb"], rgb).double().sum()
        self.matrix += confusion(outputs["segmentation"].argmax(1), class_map)
        self.correct += (outputs["classification"].argmax(1) == label).double().sum()

    def all_reduce(self) -> None:
        """Sum over the processes of a distributed run, so every rank sees the global numbers."""
        if dist.is_available() and dist.is_initialized():
            for tensor in (*self.sums.values(), self.images, self.matrix, self.correct, self.psnr):
                dist.all_reduce(tensor)

    def losses(self) -> dict[str, float]:
        n = max(float(self.images), 1.0)
        return {name: float(value) / n for name, value in self.sums.items()}

    def reconstruction(self) -> dict[str, float]:
        n = max(float(self.images), 1.0)
        matrix = self.matrix.cpu()
        return {
            "psnr": float(self.psnr) / n,
            "miou": miou(matrix),
            "pixel_accuracy": pixel_accuracy(matrix),
            "classification_accuracy": float(self.correct) / n,
        }
