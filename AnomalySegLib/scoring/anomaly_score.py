"""SADM's anomaly score: a reconstruction term and the segmentation network's probability.

For one volume (arrays ``[Z, Y, X]``, all on the 96×96×50 model grid):

    x̃  = median₅( (1 − SSIM₃D(x, x̂)) · brain mask )       (σ = 1, 9-voxel window, 3D median k = 5)
    AS = (β·x̃ + (1 − β)·ŷ) · brain mask                        (ŷ: SegUnet probability, mean over noise levels)

β is stored in the model bundle's "scoring" section (paper: the plain sum, i.e. β = 0.5 up to a
factor of 2 that does not change any threshold-free metric).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from AnomalySegLib.scoring.median import median_filter_3d
from AnomalySegLib.scoring.postprocess import erode_mask
from AnomalySegLib.scoring.ssim import ssim_map_3d
from AnomalySegLib.spec_io import JsonSpec


@dataclass(frozen=True)
class ScoringSpec(JsonSpec):
    """How anomaly maps are computed (the bundle's "scoring" section holds these; the thresholds and the
    clean-up that turn a map into a mask are :mod:`AnomalySegLib.scoring.operating_point`'s).

    Attributes:
        beta: weight of the reconstruction term x̃ in AS (1 − beta goes to the SegUnet probability).
        ssim_sigma: Gaussian window σ of the 3D SSIM, voxels.
        median_kernel: edge of the 3D median filter applied to x̃, voxels (1 = off).
        mask_erosion: in-plane erosion of the brain mask before scoring, voxels (0 = off).
    """

    # Free-form: the bundle's section also holds the thresholds and calibration evidence.
    SPEC_NAME = "scoring section"
    FREE_FORM = True

    beta: float = 0.5
    ssim_sigma: float = 1.0
    median_kernel: int = 5
    mask_erosion: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")


def reconstruction_score(
    image: torch.Tensor,
    reconstruction: torch.Tensor,
    brain_mask: torch.Tensor,
    config: ScoringSpec = ScoringSpec(),
) -> torch.Tensor:
    """x̃ = median((1 − SSIM₃D(x, x̂)) · mask): ``[Z, Y, X]`` float32 ≥ 0.

    The median filter runs after masking, so voxels just outside the mask can be non-zero;
    :func:`combined_score` masks again.
    """
    ssim = ssim_map_3d(image, reconstruction, sigma=config.ssim_sigma).to(torch.float32)
    dissimilarity = (1.0 - ssim) * brain_mask.to(torch.float32)
    return median_filter_3d(dissimilarity, config.median_kernel)


def combined_score(
    reconstruction_term: torch.Tensor,
    segmentation_probability: torch.Tensor | None,
    brain_mask: torch.Tensor,
    config: ScoringSpec = ScoringSpec(),
) -> torch.Tensor:
    """AS = (β·x̃ + (1 − β)·ŷ)·mask; with no SegUnet (Stage I only) AS = x̃·mask. ``[Z, Y, X]``."""
    mask = brain_mask.to(torch.float32)
    if segmentation_probability is None:
        return reconstruction_term * mask
    return (config.beta * reconstruction_term + (1.0 - config.beta) * segmentation_probability) * mask


def scoring_mask(brain_mask: np.ndarray, config: ScoringSpec = ScoringSpec()) -> np.ndarray:
    """The brain mask after the optional erosion: ``[Z, Y, X]`` bool."""
    return erode_mask(brain_mask, config.mask_erosion)

