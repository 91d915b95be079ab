"""The Stage II loss: the SegUnet's anomaly logits against the anomaly masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from AnomalySegLib.training.seg_batches import SegBatch


class SegObjective:
    """``loss_fn(model, batch, generator)``: BCE with logits (+ ``dice_weight`` × soft Dice)."""

    def __init__(self, dice_weight: float = 0.0) -> None:
        self.dice_weight = dice_weight
        self.dice_loss = DiceLoss(sigmoid=True, batch=True) if dice_weight else None

    def __call__(self, model: nn.Module, batch: SegBatch, generator: torch.Generator) -> torch.Tensor:
        logits = model(batch.images, batch.reconstructions).float()
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        if self.dice_loss is not None:
            loss = loss + self.dice_weight * self.dice_loss(logits, batch.labels)
        return loss
