"""DRAEM-style synthetic anomalies for self-supervised Stage II training (Zavrtanik et al., ICCV 2021).

As in the SADM paper's code, the texture source is the Perlin image itself (no external texture set):

1. Perlin noise with ``2^k`` cells per axis, ``k ~ U{0..6}``, rotated by an angle ~ U[−90°, 90°];
2. anomaly mask ``M = noise > threshold``, optionally restricted to the brain mask. The fixed 0.5 is
   the authors' code (``perlin_noise > 0.5`` in their DRAEM ``augmenter.py``); the paper's text
   describes a sampled threshold instead, which ``threshold_range`` offers;
3. texture ``T`` = the noise (clipped to [0, 1]) through three random augmentations
   (:func:`AnomalySegLib.anomalies.image_ops.random_augment`);
4. blend ``I' = (1 − M)·I + (1 − γ)·M·I + γ·M·T`` with opacity ``γ ~ U[0.2, 1]`` per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from AnomalySegLib.anomalies._random import uniform
from AnomalySegLib.anomalies.image_ops import random_augment, rotate
from AnomalySegLib.anomalies.perlin import random_perlin_noise_2d


@dataclass(frozen=True)
class SyntheticAnomalies:
    """Images with synthetic anomalies and their ground truth.

    Attributes:
        images: ``[B, 1, H, W]`` float, the anomalous images.
        masks: ``[B, 1, H, W]`` float 0/1, where anomalies were placed.
    """

    images: torch.Tensor
    masks: torch.Tensor


@dataclass(frozen=True)
class DraemAnomalyGenerator:
    """Seeded, batched DRAEM anomaly generator (all torch, on the images' device).

    Attributes:
        opacity_range: γ ~ U[opacity_range] per sample (paper: (0.2, 1.0)).
        threshold_range: mask threshold ~ U[threshold_range] per sample; (0.5, 0.5) is the fixed 0.5
            of the authors' code (higher thresholds → smaller, sparser anomalies).
        scale_exponents: Perlin cells per axis are ``2^k``, k ~ U{scale_exponents} (paper: (0, 6)).
        rotation_deg: the noise is rotated by an angle ~ U[−rotation_deg, rotation_deg].
        augmentations: how many distinct texture augmentations are applied (paper: 3).
        probability: chance that a sample gets an anomaly at all (the paper's code: 1).
        within_brain: keep anomalies inside the brain mask passed to :meth:`__call__`. The authors'
            code places them anywhere in the slice (``seg_paper`` does too); anomalies on the
            background are trivially visible, so inside the brain is the default here.
    """

    opacity_range: tuple[float, float] = (0.2, 1.0)
    threshold_range: tuple[float, float] = (0.5, 0.5)
    scale_exponents: tuple[int, int] = (0, 6)
    rotation_deg: float = 90.0
    augmentations: int = 3
    probability: float = 1.0
    within_brain: bool = True

    def __post_init__(self) -> None:
        low, high = self.opacity_range
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"opacity_range {self.opacity_range} must satisfy 0 <= low <= high <= 1")
        if self.threshold_range[0] > self.threshold_range[1]:
            raise ValueError(f"threshold_range {self.threshold_range} must be (low, high)")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability {self.probability} must be in [0, 1]")

    def __call__(
        self,
        images: torch.Tensor,
        brain_masks: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SyntheticAnomalies:
        """Add anomalies to a batch of slices.

        Args:
            images: ``[B, 1, H, W]`` float in [0, 1].
            brain_masks: ``[B, 1, H, W]`` bool/0-1 brain masks; required when ``within_brain``.
            generator: seeds every random draw (same seed → same anomalies).

        Returns:
            :class:`SyntheticAnomalies` with ``images`` and ``masks`` shaped like ``images``.
        """
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be [B, 1, H, W], got {tuple(images.shape)}")
        if self.within_brain and brain_masks is None:
            raise ValueError("within_brain=True needs brain_masks")
        batch, _, height, width = images.shape
        device = images.device

        noise = random_perlin_noise_2d(batch, (height, width), self.scale_exponents, generator, device)
        angles = uniform((batch,), -self.rotation_deg, self.rotation_deg, generator, device)
        noise = rotate(noise[:, None].to(images.dtype), angles)

        thresholds = uniform((batch,), *self.threshold_range, generator, device).view(-1, 1, 1, 1)
        present = uniform((batch,), 0.0, 1.0, generator, device).view(-1, 1, 1, 1) < self.probability
        masks = (noise > thresholds) & present
        if self.within_brain:
            masks = masks & (brain_masks > 0)
        masks = masks.to(images.dtype)

        texture = random_augment(noise.clamp(0.0, 1.0), self.augmentations, generator)
        opacity = uniform((batch,), *self.opacity_range, generator, device).view(-1, 1, 1, 1).to(images.dtype)
        blended = (1 - masks) * images + (1 - opacity) * masks * images + opacity * masks * texture
        return SyntheticAnomalies(images=blended, masks=masks)
