"""Whole-volume lesion-like anomalies for choosing the operating point: 3D blobs of a given size in ml.

Stage II trains on slice-wise anomalies (:mod:`AnomalySegLib.anomalies.lesion`, DRAEM); a slice-wise
anomaly drawn independently on every slice is not what a scan with a lesion looks like, and the
operating point's clean-up (rim erosion, minimum finding size in ml) acts on 3D findings. This makes
held-out volumes with a few 3D lesions instead: each an irregular ellipsoid of volume ~ log-U[volume
range] ml centred on a random brain voxel, its boundary deformed by smoothed noise, brighter or darker
than the tissue, its edge soft (the same intensity model as the 2D generator:
``I' = I + strength·S·(v − I)``), labelled where the intensity changed by at least ``min_change``.
numpy/scipy, seeded by a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class VolumeLesions:
    """How the lesions are drawn (intensities in the model's [0, 1] range).

    Attributes:
        count_range: lesions per volume, inclusive.
        volume_range_ml: lesion volume, drawn log-uniformly, millilitres.
        bright_probability: chance that a lesion is bright (else dark).
        bright_range, dark_range: target level ``v``.
        strength_range: how far the intensity moves towards ``v``.
        irregularity: relative amplitude of the boundary deformation.
        edge_sigma_mm: softness of the edge, mm.
        min_change: smallest intensity change labelled anomalous.
    """

    count_range: tuple[int, int] = (1, 3)
    volume_range_ml: tuple[float, float] = (0.5, 30.0)
    bright_probability: float = 0.5
    bright_range: tuple[float, float] = (0.75, 1.0)
    dark_range: tuple[float, float] = (0.0, 0.25)
    strength_range: tuple[float, float] = (0.6, 1.0)
    irregularity: float = 0.3
    edge_sigma_mm: float = 1.5
    min_change: float = 0.05

    def __call__(self, image: np.ndarray, brain: np.ndarray, voxel_size_mm: Sequence[float],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Add lesions to one volume.

        Args:
            image: ``[Z, Y, X]`` float in [0, 1].
            brain: ``[Z, Y, X]`` bool; lesions are centred in it and clipped to it.
            voxel_size_mm: ``(dz, dy, dx)``.
            rng: seeds every draw.

        Returns:
            ``(image with lesions, labels bool, one dict per lesion: volume_ml, bright)``.
        """
        image = np.asarray(image, dtype=np.float32)
        brain = np.asarray(brain, dtype=bool)
        spacing = np.asarray(voxel_size_mm, dtype=np.float64)
        out, labels, drawn = image.copy(), np.zeros(image.shape, dtype=bool), []
        candidates = np.argwhere(ndimage.binary_erosion(brain, iterations=2) if brain.sum() > 1000 else brain)
        if candidates.size == 0:
            return out, labels, drawn
        grids = np.meshgrid(*(np.arange(n) * s for n, s in zip(image.shape, spacing)), indexing="ij")
        for _ in range(int(rng.integers(self.count_range[0], self.count_range[1] + 1))):
            volume_ml = float(np.exp(rng.uniform(*np.log(self.volume_range_ml))))
            shape = self._shape(grids, candidates[rng.integers(len(candidates))] * spacing, volume_ml, spacing, rng)
            shape &= brain
            bright = bool(rng.random() < self.bright_probability)
            target = rng.uniform(*(self.bright_range if bright else self.dark_range))
            strength = rng.uniform(*self.strength_range)
            soft = ndimage.gaussian_filter(shape.astype(np.float32), self.edge_sigma_mm / spacing) * brain
            change = strength * np.clip(soft, 0.0, 1.0) * (target - out)
            lesion = shape & (np.abs(change) >= self.min_change)
            out = np.clip(out + change, 0.0, 1.0).astype(np.float32)
            labels |= lesion
            drawn.append({"volume_ml": float(lesion.sum() * np.prod(spacing) / 1000.0), "bright": bright})
        return out, labels, drawn

    def _shape(self, grids: list[np.ndarray], centre_mm: np.ndarray, volume_ml: float, spacing: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
        """An irregular ellipsoid of about ``volume_ml`` at ``centre_mm``, random axes and orientation."""
        radius = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
        axes = radius * rng.uniform(0.7, 1.3, size=3)
        axes *= radius / np.prod(axes) ** (1.0 / 3.0)  # keep the volume
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        offsets = np.stack([g - c for g, c in zip(grids, centre_mm)], axis=-1) @ rotation
        distance = np.sqrt(((offsets / axes) ** 2).sum(axis=-1))
        noise = ndimage.gaussian_filter(rng.normal(size=grids[0].shape), max(radius / 2, 1.0) / spacing)
        noise /= max(float(np.abs(noise).max()), 1e-6)
        return distance <= 1.0 + self.irregularity * noise
