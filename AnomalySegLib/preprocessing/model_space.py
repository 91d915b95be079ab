"""Sampling a native image into the model grid: one interpolation through the registration transform.

Before sampling the coarser model grid the native image is smoothed with a Gaussian of
σ = (model spacing − native spacing) / 2 mm per axis (scikit-image's anti-aliasing rule for
``rescale``), which stands in for the paper's 1 mm crop + ×2 downsampling without interpolating twice.
"""

from __future__ import annotations

import SimpleITK as sitk

from AnomalySegLib.preprocessing.spec import ModelGrid

BINARY_THRESHOLD = 0.5


def model_reference(grid: ModelGrid) -> sitk.Image:
    """An empty float32 image with the model grid's geometry (a resampling reference)."""
    reference = sitk.Image([int(s) for s in grid.size], sitk.sitkFloat32)
    reference.SetSpacing([float(s) for s in grid.spacing])
    reference.SetOrigin([float(o) for o in grid.origin])
    reference.SetDirection([float(d) for d in grid.direction])
    return reference


def antialias(image: sitk.Image, target_spacing: tuple[float, float, float]) -> sitk.Image:
    """Gaussian-smooth ``image`` (float32) for sampling at ``target_spacing`` mm; unchanged axes where
    the native spacing is already as coarse. The model grid is near-isotropic, so the smallest target
    spacing is used for every native axis."""
    target = min(target_spacing)
    sigmas = [max(0.0, (target - s) / 2.0) for s in image.GetSpacing()]
    image = sitk.Cast(image, sitk.sitkFloat32)
    if max(sigmas) == 0.0:
        return image
    # recursive Gaussian needs sigma > 0 on every axis; a tiny sigma leaves an axis practically untouched
    sigmas = [max(sigma, 1e-3 * s) for sigma, s in zip(sigmas, image.GetSpacing())]
    return sitk.SmoothingRecursiveGaussian(image, sigmas)


def resample_to_model(image: sitk.Image, transform: sitk.Transform, grid: ModelGrid,
                      binary: bool = False, smooth: bool = True) -> sitk.Image:
    """``image`` (native grid) sampled on the model grid through ``transform`` (template → native).

    Continuous images: optional anti-aliasing, then linear interpolation, 0 outside the input; float32.
    Binary images (masks, labels): linear interpolation of the 0/1 image then ≥ 0.5 (smoother edges
    than nearest neighbour); uint8 0/1; never smoothed.
    """
    reference = model_reference(grid)
    if binary:
        sampled = sitk.Resample(sitk.Cast(image > 0, sitk.sitkFloat32), reference, transform,
                                sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.Cast(sampled >= BINARY_THRESHOLD, sitk.sitkUInt8)
    source = antialias(image, grid.spacing) if smooth else sitk.Cast(image, sitk.sitkFloat32)
    return sitk.Resample(source, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
