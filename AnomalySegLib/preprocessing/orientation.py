"""Reorientation and resampling of a native image into the working grid used for estimation steps.

The working image (axis-ordered LPS, isotropic) is what brain-mask detection, N4 estimation and
registration look at, so that they behave the same for any storage order, oblique direction or slice
thickness of the input. The model-space output is *not* computed from it: it is sampled once from
the native image (see :mod:`AnomalySegLib.preprocessing.model_space`).
"""

from __future__ import annotations

import math

import SimpleITK as sitk


def reorient_to_lps(image: sitk.Image) -> sitk.Image:
    """The same voxels with axes permuted/flipped so that ``i, j, k`` point (nearest) to L, P, S.

    Voxel values and physical positions are unchanged (no interpolation). For an oblique direction the
    nearest axis permutation is chosen and the remaining rotation stays in the direction matrix.
    """
    return sitk.DICOMOrient(image, "LPS")


def resample_isotropic(image: sitk.Image, spacing_mm: float,
                       interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """``image`` on a grid of ``spacing_mm`` cubic voxels covering the same physical extent.

    Keeps origin (first voxel centre) and direction; the number of voxels per axis is
    ``ceil(extent / spacing_mm)`` with extent = size × spacing. Values outside the input are 0.
    Output pixel type: float32 (labels: pass ``sitk.sitkNearestNeighbor`` and cast back if needed).
    """
    size = [max(1, math.ceil(n * s / spacing_mm)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    # keep the first voxel's outer face where it was: shift the first centre by half the spacing change
    origin_index = [(spacing_mm / s - 1.0) / 2.0 for s in image.GetSpacing()]
    origin = image.TransformContinuousIndexToPhysicalPoint(origin_index)
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), size, sitk.Transform(), interpolator,
                         origin, (spacing_mm,) * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)
