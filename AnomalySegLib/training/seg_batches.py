"""Stage II training batches: slices with synthetic or real anomalies and their Stage I reconstructions.

Each step draws ``batch_size`` axial slices: ``synthetic_count`` healthy slices given synthetic anomalies
(DRAEM textures, lesion-like blobs), the rest labelled slices. Stage I reconstructs every slice from the
possibly anomalous input at a noise level ``t`` drawn per slice from ``timestep_range``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from AnomalySegLib.anomalies import AnomalyGenerator
from AnomalySegLib.diffusion.reconstruction import Reconstructor
from AnomalySegLib.training.augment import SliceAugmenter, erode_mask_edge
from AnomalySegLib.training.seg_config import SegTrainingSpec
from AnomalySegLib.training.slices import SliceSampler


@dataclass
class SegBatch:
    """One training batch: inputs x, reconstructions x̂ and targets, all ``[B, 1, H, W]``."""

    images: torch.Tensor
    reconstructions: torch.Tensor
    labels: torch.Tensor


class SegBatchSource:
    """``batch_fn(step, generator)`` for :class:`Trainer`: slices, anomalies, Stage I reconstructions.

    Args:
        healthy: sampler over healthy cases (synthetic anomalies), or ``None``.
        labelled: sampler over labelled cases, or ``None``.
        synthetic_count: how many of the ``batch_size`` slices come from ``healthy``.
    """

    def __init__(
        self,
        reconstructor: Reconstructor,
        healthy: SliceSampler | None,
        labelled: SliceSampler | None,
        anomalies: AnomalyGenerator,
        settings: SegTrainingSpec,
        synthetic_count: int,
    ) -> None:
        self.reconstructor = reconstructor
        self.healthy, self.labelled = healthy, labelled
        self.anomalies = anomalies
        self.settings = settings
        self.synthetic_count = synthetic_count
        self.augmenter = SliceAugmenter(settings.augmentation) if settings.augmentation else None

    def __call__(self, step: int, generator: torch.Generator) -> SegBatch:
        images, labels = [], []
        if self.synthetic_count:
            healthy = self.healthy.sample(self.synthetic_count, generator)
            clean, masks = healthy.images, healthy.masks
            if self.settings.mask_erosion_p > 0:
                clean, masks = erode_mask_edge(clean, masks, self.settings.mask_erosion_p,
                                               self.settings.mask_erosion_max_pixels, generator)
            clean = self._augment(clean, generator)
            synthetic = self.anomalies(clean, masks, generator)
            images.append(synthetic.images)
            labels.append(synthetic.masks)
        labelled_count = self.settings.batch_size - self.synthetic_count
        if labelled_count:
            labelled = self.labelled.sample(labelled_count, generator)
            images.append(self._augment(labelled.images, generator))
            labels.append(labelled.labels)
        images_t, labels_t = torch.cat(images), torch.cat(labels)
        low, high = self.settings.timestep_range
        timesteps = torch.randint(low, high, (images_t.shape[0],), generator=generator)
        reconstructions = self.reconstructor.predict_x0(images_t, timesteps, generator)
        device = self.reconstructor.device
        return SegBatch(images_t.to(device), reconstructions, labels_t.to(device))

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.augmenter(images, generator) if self.augmenter else images


def synthetic_share(settings: SegTrainingSpec, has_healthy: bool, has_labelled: bool) -> int:
    """Slices per batch drawn from healthy data with synthetic anomalies."""
    if has_healthy and not has_labelled:
        return settings.batch_size
    if has_labelled and not has_healthy:
        return 0
    return int(round(settings.synthetic_fraction * settings.batch_size))
