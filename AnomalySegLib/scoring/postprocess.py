"""Optional erosion of the brain mask before scoring (off by default, as in the paper, whose code never applies it).

The clean-up of thresholded masks is :mod:`AnomalySegLib.scoring.operating_point`'s."""

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

