"""Optional clean-up of anomaly maps (off by default, as in the paper, whose code never applies it)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def erode_mask(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Shrink a ``[Z, Y, X]`` brain mask by ``iterations`` voxels in-plane (each axial slice, 4-connected).

    Scores on the brain's rim come mostly from registration and skull-stripping errors; eroding the
    mask before scoring suppresses them. ``iterations`` = 0 returns the mask unchanged.
    """
    mask = np.asarray(mask, dtype=bool)
    if iterations <= 0:
        return mask
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_erosion(mask, structure=in_plane, iterations=iterations)


def remove_small_components(segmentation: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop 26-connected components of a binary ``[Z, Y, X]`` volume smaller than ``min_voxels``."""
    segmentation = np.asarray(segmentation, dtype=bool)
    if min_voxels <= 1 or not segmentation.any():
        return segmentation
    labels, count = ndimage.label(segmentation, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]
