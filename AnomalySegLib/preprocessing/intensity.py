"""Intensity steps in model space: curvature-flow denoising and percentile rescaling inside the mask."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def denoise_curvature_flow(image: sitk.Image, time_step: float = 0.125, iterations: int = 3) -> sitk.Image:
    """Edge-preserving smoothing (SimpleITK ``CurvatureFlow``, the paper's load-time denoising).

    ``iterations == 0`` returns the image unchanged (as float32).
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    if iterations == 0:
        return image
    return sitk.CurvatureFlow(image, timeStep=time_step, numberOfIterations=iterations)


def percentile_range(image: sitk.Image, mask: sitk.Image, low: float = 1.0,
                     high: float = 99.0) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of the voxels inside ``mask`` (image units).

    Raises:
        ValueError: the mask is empty or the percentile range has no width (a constant image).
    """
    values = sitk.GetArrayViewFromImage(image)
    inside = sitk.GetArrayViewFromImage(mask) > 0
    if not inside.any():
        raise ValueError("the brain mask is empty in model space; cannot rescale intensities")
    p_low, p_high = np.percentile(values[inside], [low, high])
    if not p_high > p_low:
        raise ValueError(f"intensities inside the brain mask are constant ({p_low:g}); cannot rescale")
    return float(p_low), float(p_high)


def rescale_to_unit(image: sitk.Image, mask: sitk.Image, value_range: tuple[float, float]) -> sitk.Image:
    """Map ``value_range`` (image units) to [0, 1], clipped; 0 outside ``mask``. float32, same grid."""
    p_low, p_high = value_range
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    scaled = np.clip((values - p_low) / (p_high - p_low), 0.0, 1.0)
    scaled[sitk.GetArrayViewFromImage(mask) == 0] = 0.0
    result = sitk.GetImageFromArray(scaled.astype(np.float32))
    result.CopyInformation(image)
    return result

