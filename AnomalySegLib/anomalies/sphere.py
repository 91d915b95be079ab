"""Balls of constant intensity: the simplest synthetic anomaly, for tests and sanity checks.

Works on 2D slices (discs) and 3D volumes (spheres) alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from AnomalySegLib.anomalies._random import random_voxels_in_masks, uniform
from AnomalySegLib.anomalies.draem import SyntheticAnomalies


@dataclass(frozen=True)
class SphereAnomalyGenerator:
    """One ball per sample, its centre inside the brain mask, filled with a constant intensity.

    Attributes:
        radius_range: radius ~ U[radius_range], voxels.
        intensity_range: the ball's value ~ U[intensity_range] (images are in [0, 1]).
        within_brain: clip the ball to the brain mask.
    """

    radius_range: tuple[float, float] = (4.0, 8.0)
    intensity_range: tuple[float, float] = (0.8, 1.0)
    within_brain: bool = True

    def __call__(
        self,
        images: torch.Tensor,
        brain_masks: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> SyntheticAnomalies:
        """Add one ball to each sample.

        Args:
            images: ``[B, 1, *spatial]`` (2D or 3D) float in [0, 1].
            brain_masks: same shape, bool/0-1; centres are drawn among its voxels (an empty mask
                gives no anomaly for that sample).
            generator: seeds the draws.
        """
        batch = images.shape[0]
        spatial = images.shape[2:]
        device = images.device
        centre, has_brain = random_voxels_in_masks(brain_masks, generator)  # [B, ndim], [B]

        grids = torch.meshgrid(*(torch.arange(n, device=device, dtype=torch.float32) for n in spatial), indexing="ij")
        ones = [1] * len(spatial)
        squared = sum((grid[None] - centre[:, axis].view(-1, *ones)) ** 2 for axis, grid in enumerate(grids))
        radius = uniform((batch,), *self.radius_range, generator, device).view(-1, *ones)
        balls = ((squared <= radius**2) & has_brain.view(-1, *ones))[:, None]
        if self.within_brain:
            balls = balls & (brain_masks > 0)
        value = uniform((batch,), *self.intensity_range, generator, device).view(-1, 1, *ones)
        masks = balls.to(images.dtype)
        return SyntheticAnomalies(images=torch.where(balls, value.to(images.dtype), images), masks=masks)
