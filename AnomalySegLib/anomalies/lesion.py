"""Lesion-like synthetic anomalies: irregular, soft-edged blobs brighter or darker than the tissue.

DRAEM anomalies (:mod:`AnomalySegLib.anomalies.draem`) are foreign textures; many real lesions are
instead a compact region whose intensity moved towards a new level (an enhancing tumour, oedema, an
infarct, a demyelinating plaque) while some of the tissue's texture shows through. A Stage II network
trained on DRAEM alone may not fire on such a blob (the bundled default model did not on the tumours
of MRBrainTumor1/2), so this generator adds that family:

1. shape: an ellipse (radius ~ U[radius_range] pixels, axis ratio ~ U[aspect_range], any orientation)
   centred on a random brain pixel, its boundary pushed in and out by low-frequency Perlin noise
   (``irregularity``), restricted to the brain;
2. intensity: a target level ``v`` drawn from ``bright_range`` (with probability ``bright_probability``)
   or ``dark_range``; the image moves towards it by ``strength ~ U[strength_range]`` inside a softened
   copy of the shape (Gaussian edge, ``edge_sigma`` pixels): ``I' = I + strength·S·(v − I)``;
3. ground truth: the shape's pixels whose intensity changed by at least ``min_change`` (a dark blob in
   the dark ventricles changes nothing visible and is not labelled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from monai.networks.layers import GaussianFilter

from AnomalySegLib.anomalies._random import random_voxels_in_masks, uniform
from AnomalySegLib.anomalies.draem import SyntheticAnomalies
from AnomalySegLib.anomalies.perlin import perlin_noise_2d

#: Perlin lattice cells across the slice for the boundary's irregularity (a few bumps per blob).
IRREGULARITY_CELLS = 8


@dataclass(frozen=True)
class LesionAnomalyGenerator:
    """Seeded, batched lesion-like anomalies on 2D slices ``[B, 1, H, W]`` in [0, 1] (see the module docstring).

    Attributes:
        radius_range: mean radius, pixels (2 mm pixels on the model grid: 6–32 mm by default).
        aspect_range: ratio of the ellipse's axes.
        irregularity: relative amplitude of the boundary's Perlin deformation (0: a smooth ellipse).
        bright_probability: chance that the blob is brighter (else darker) than a target level.
        bright_range: target level ``v`` of bright blobs.
        dark_range: target level ``v`` of dark blobs.
        strength_range: how far the intensity moves towards ``v`` (1: replaced; less keeps texture).
        edge_sigma: softness of the blob's edge, pixels.
        min_change: smallest intensity change that counts as anomalous in the ground truth.
        probability: chance that a sample gets a blob at all.
    """

    radius_range: tuple[float, float] = (3.0, 16.0)
    aspect_range: tuple[float, float] = (0.6, 1.0)
    irregularity: float = 0.3
    bright_probability: float = 0.5
    bright_range: tuple[float, float] = (0.75, 1.0)
    dark_range: tuple[float, float] = (0.0, 0.25)
    strength_range: tuple[float, float] = (0.5, 1.0)
    edge_sigma: float = 1.0
    min_change: float = 0.05
    probability: float = 1.0

    def __post_init__(self) -> None:
        for name in ("radius_range", "aspect_range", "bright_range", "dark_range", "strength_range"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} {getattr(self, name)} must satisfy 0 <= low <= high")
        for name in ("bright_range", "dark_range", "strength_range"):
            if getattr(self, name)[1] > 1.0:
                raise ValueError(f"{name} {getattr(self, name)} must lie in [0, 1]")
        if self.radius_range[0] <= 0 or self.aspect_range[0] <= 0:
            raise ValueError("radius_range and aspect_range must be positive")
        for name in ("bright_probability", "probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name)} must be in [0, 1]")
        if self.irregularity < 0 or self.edge_sigma < 0 or self.min_change < 0:
            raise ValueError("irregularity, edge_sigma and min_change must be >= 0")

    def __call__(
        self,
        images: torch.Tensor,
        brain_masks: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> SyntheticAnomalies:
        """Add at most one blob to each slice.

        Args:
            images: ``[B, 1, H, W]`` float in [0, 1].
            brain_masks: ``[B, 1, H, W]`` bool/0-1; the blob's centre is a random pixel of it and the blob
                stays inside it (an empty mask gives no anomaly).
            generator: seeds every random draw (same seed → same anomalies).

        Returns:
            :class:`SyntheticAnomalies`, ``images`` and ``masks`` shaped like ``images``.
        """
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be [B, 1, H, W], got {tuple(images.shape)}")
        batch, _, height, width = images.shape
        device, dtype = images.device, images.dtype
        brain = brain_masks > 0

        shapes = self._shapes(brain, generator)
        present = uniform((batch,), 0.0, 1.0, generator, device) < self.probability
        shapes = shapes & brain & present.view(-1, 1, 1, 1)

        bright = uniform((batch,), 0.0, 1.0, generator, device) < self.bright_probability
        target = torch.where(bright, uniform((batch,), *self.bright_range, generator, device),
                             uniform((batch,), *self.dark_range, generator, device)).view(-1, 1, 1, 1)
        strength = uniform((batch,), *self.strength_range, generator, device).view(-1, 1, 1, 1)
        soft = shapes.to(torch.float32)
        if self.edge_sigma > 0:
            soft = GaussianFilter(spatial_dims=2, sigma=self.edge_sigma).to(device)(soft).clamp(0.0, 1.0)
        soft = soft * brain
        change = strength * soft * (target - images.to(torch.float32))
        masks = shapes & (change.abs() >= self.min_change)
        return SyntheticAnomalies(images=(images + change.to(dtype)).clamp(0.0, 1.0), masks=masks.to(dtype))

    def _shapes(self, brain: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``[B, 1, H, W]`` bool irregular ellipses centred on random brain pixels."""
        return irregular_ellipses(brain, self.radius_range, self.aspect_range, self.irregularity, generator).distance <= 1.0


@dataclass(frozen=True)
class EllipseField:
    """Irregular ellipses on 2D slices, one per sample.

    Attributes:
        distance: ``[B, 1, H, W]`` normalised distance from the centre: 0 there, 1 on the irregular boundary.
        smooth_distance: ``[B, 1, H, W]`` the same without the boundary's irregularity.
        centres: ``[B, 2]`` (y, x) pixel indices of the centres.
        radius: ``[B]`` mean radius, pixels.
    """

    distance: torch.Tensor
    smooth_distance: torch.Tensor
    centres: torch.Tensor
    radius: torch.Tensor


def irregular_ellipses(
    brain: torch.Tensor,
    radius_range: tuple[float, float],
    aspect_range: tuple[float, float],
    irregularity: float,
    generator: torch.Generator | None,
) -> EllipseField:
    """Ellipses (mean radius ~ U[radius_range] pixels, axis ratio ~ U[aspect_range], any orientation)
    centred on random pixels of ``brain`` ``[B, 1, H, W]``, their boundary pushed in and out by
    low-frequency Perlin noise of relative amplitude ``irregularity``."""
    batch, _, height, width = brain.shape
    device = brain.device
    centres, _ = random_voxels_in_masks(brain, generator)  # [B, 2]: (y, x)
    radius = uniform((batch,), *radius_range, generator, device)
    aspect = uniform((batch,), *aspect_range, generator, device)
    angle = uniform((batch,), 0.0, math.pi, generator, device)
    resolutions = torch.full((batch, 2), IRREGULARITY_CELLS, dtype=torch.int64)
    wobble = perlin_noise_2d((height, width), resolutions, generator, device)  # [B, H, W]

    y = torch.arange(height, device=device, dtype=torch.float32).view(1, -1, 1) - centres[:, 0].view(-1, 1, 1)
    x = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, -1) - centres[:, 1].view(-1, 1, 1)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    along, across = cos * x + sin * y, -sin * x + cos * y
    semi_major = radius.view(-1, 1, 1) / aspect.sqrt().view(-1, 1, 1)
    semi_minor = radius.view(-1, 1, 1) * aspect.sqrt().view(-1, 1, 1)
    smooth = torch.sqrt((along / semi_major) ** 2 + (across / semi_minor) ** 2)
    # distance <= 1 exactly where smooth <= 1 + irregularity·wobble (the boundary moved by the noise)
    irregular = smooth / (1.0 + irregularity * wobble).clamp(min=0.05)
    return EllipseField(irregular[:, None], smooth[:, None], centres, radius)
