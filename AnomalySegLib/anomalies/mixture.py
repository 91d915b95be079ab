"""A per-sample mixture of synthetic anomaly generators (e.g. DRAEM textures and lesion-like blobs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from AnomalySegLib.anomalies._random import uniform
from AnomalySegLib.anomalies.draem import SyntheticAnomalies


class AnomalyGenerator(Protocol):
    """Anything that adds synthetic anomalies to ``[B, 1, H, W]`` slices in [0, 1]."""

    def __call__(self, images: torch.Tensor, brain_masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> SyntheticAnomalies: ...


@dataclass(frozen=True)
class AnomalyMixture:
    """Each sample gets its anomaly from one generator, chosen with probability proportional to its weight.

    Every generator runs on the whole batch, in order and before the choice is drawn (so the first
    generator's anomalies are those it would make alone with the same seed), and the chosen sample is kept: generation costs a few ms per slice, small next to the Stage I reconstruction.

    Attributes:
        generators: the generators.
        weights: their relative weights (non-negative, not all zero).
    """

    generators: tuple[AnomalyGenerator, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.generators) != len(self.weights) or not self.generators:
            raise ValueError("give one weight per generator, and at least one generator")
        if min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(f"weights {self.weights} must be >= 0 and not all zero")

    def __call__(self, images: torch.Tensor, brain_masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> SyntheticAnomalies:
        """``images`` ``[B, 1, H, W]`` → :class:`SyntheticAnomalies` of the same shape."""
        results = [source(images, brain_masks, generator) for source in self.generators]  # draws first
        bounds = torch.tensor(self.weights, dtype=torch.float64).cumsum(0) / sum(self.weights)
        draws = uniform((images.shape[0],), 0.0, 1.0, generator, images.device).to(torch.float64)
        choice = torch.bucketize(draws, bounds.to(images.device), right=True).clamp(max=len(self.weights) - 1)
        mixed_images, mixed_masks = images.clone(), torch.zeros_like(images)
        for index, result in enumerate(results):
            chosen = (choice == index).view(-1, 1, 1, 1)
            mixed_images = torch.where(chosen, result.images, mixed_images)
            mixed_masks = torch.where(chosen, result.masks, mixed_masks)
        return SyntheticAnomalies(images=mixed_images, masks=mixed_masks)
