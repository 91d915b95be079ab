"""Stage II validation: the SegUnet on fixed held-out slices, reconstructed as at inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from AnomalySegLib.anomalies import AnomalyGenerator
from AnomalySegLib.diffusion.reconstruction import Reconstructor
from AnomalySegLib.metrics import best_dice, dice
from AnomalySegLib.training.slices import SliceSampler

VALIDATION_SEED = 4321


class SegValidation:
    """``validate_fn(model)``: BCE, Dice at ŷ > 0.5 and ⌈Dice⌉ of ŷ over fixed held-out slices.

    The slices, their synthetic anomalies and their Stage I reconstructions at the test noise levels
    are computed once (Stage I is frozen); each validation is then only SegUnet passes.
    """

    def __init__(
        self,
        reconstructor: Reconstructor,
        healthy: SliceSampler | None,
        labelled: SliceSampler | None,
        anomalies: AnomalyGenerator,
        max_slices: int,
        chunk: int = 32,
    ) -> None:
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        images, labels = [], []
        if healthy is not None:
            batch = healthy.evenly_spaced(max_slices)
            synthetic = anomalies(batch.images, batch.masks, generator)
            images.append(synthetic.images)
            labels.append(synthetic.masks)
        if labelled is not None:
            batch = labelled.evenly_spaced(max_slices)
            images.append(batch.images)
            labels.append(batch.labels)
        self.images = torch.cat(images)
        self.labels = torch.cat(labels)
        self.device = reconstructor.device
        self.chunk = chunk
        per_level = [
            reconstructor.reconstruct(part, generator=generator).per_level for part in self.images.split(chunk)
        ]
        self.reconstructions = torch.cat(per_level, dim=1).cpu()  # [L, N, 1, H, W]

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        probabilities = torch.zeros_like(self.images)
        logits_sum = torch.zeros_like(self.images)
        for level in self.reconstructions:
            for start in range(0, self.images.shape[0], self.chunk):
                part = slice(start, start + self.chunk)
                logits = model(self.images[part].to(self.device), level[part].to(self.device)).float().cpu()
                logits_sum[part] += logits
                probabilities[part] += torch.sigmoid(logits)
        levels = self.reconstructions.shape[0]
        probabilities /= levels
        bce = F.binary_cross_entropy_with_logits(logits_sum / levels, self.labels)
        truth = self.labels.numpy() > 0.5
        return {
            "bce": float(bce),
            "dice_at_0.5": dice(probabilities.numpy() > 0.5, truth),
            "best_dice": best_dice(probabilities.numpy(), truth)[0],
        }
