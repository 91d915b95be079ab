"""The exact way back: a model-space map resampled onto the input's native grid.

This is what ``segment`` calls for every output (reconstruction, anomaly map, binary mask).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.preprocessing.model_space import BINARY_THRESHOLD, model_reference
from AnomalySegLib.preprocessing.spec import ModelGrid

KINDS = ("continuous", "binary")


def model_image(model_map: sitk.Image | np.ndarray, grid: ModelGrid) -> sitk.Image:
    """A model-space array ``[Z, Y, X]`` (or image) as a float32 image on ``grid``.

    Raises:
        ValueError: not 3D scalar, the array's shape is not ``grid.array_shape``, or it holds NaN/inf.
    """
    if isinstance(model_map, sitk.Image):
        if model_map.GetDimension() != 3 or model_map.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("a model-space map must be a 3D scalar image")
        image = sitk.Cast(model_map, sitk.sitkFloat32)
        if not np.all(np.isfinite(sitk.GetArrayViewFromImage(image))):
            raise ValueError("model-space map holds NaN or infinite values")
        return image
    array = np.asarray(model_map, dtype=np.float32)
    if array.shape != grid.array_shape:
        raise ValueError(f"model-space array has shape {array.shape}; the model grid needs "
                         f"{grid.array_shape} [Z, Y, X]")
    if not np.all(np.isfinite(array)):
        raise ValueError("model-space array holds NaN or infinite values")
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(model_reference(grid))
    return image


def restore_to_native(model_map: sitk.Image | np.ndarray, reference: sitk.Image, transform: sitk.Transform,
                      kind: str = "continuous", grid: ModelGrid | None = None) -> sitk.Image:
    """``model_map`` resampled onto exactly ``reference``'s grid (size, spacing, origin, direction).

    Args:
        model_map: model-space image, or array ``[Z, Y, X]`` on ``grid``.
        reference: the native input image (only its geometry is used).
        transform: the preprocessing transform (template → native points, as stored in ``transform.tfm``);
            its inverse is applied.
        kind: ``"continuous"`` → linear interpolation, 0 outside model space, float32;
            ``"binary"`` → linear interpolation of the 0/1 map then ≥ 0.5, uint8 0/1.
        grid: the model grid of an array ``model_map`` (default: the default spec's grid).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    image = model_image(model_map, grid or ModelGrid())
    if kind == "binary":
        image = sitk.Cast(image > 0.5, sitk.sitkFloat32)
    inverse = transform.GetInverse()
    restored = sitk.Resample(image, reference, inverse, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    if kind == "binary":
        return sitk.Cast(restored >= BINARY_THRESHOLD, sitk.sitkUInt8)
    return restored
