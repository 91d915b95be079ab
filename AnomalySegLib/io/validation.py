"""Checks that a scan and its brain mask are usable before any processing starts.

Each check raises :class:`~AnomalySegLib.errors.InputError` naming the file and the first problem
found, in one line, e.g. ``scan.nii.gz: has 4 dimensions (4D series); a 3D volume is needed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.errors import InputError

#: Smallest number of voxels accepted along each axis.
MIN_VOXELS_PER_AXIS = 8
#: Largest voxel spacing accepted (mm); anything coarser is not a brain MRI (or has broken units).
MAX_SPACING_MM = 20.0
#: Smallest field of view accepted along each axis (mm): an adult brain spans 120–170 mm; a scan
#: narrower than this cannot hold enough of one to register and score.
MIN_FIELD_OF_VIEW_MM = 60.0
#: Most voxels a file may declare (1024×1024×512); checked on the header before any voxel is read,
#: so a corrupt or hostile header cannot make ITK allocate tens of GiB.
MAX_VOXELS = 1024 * 1024 * 512
#: Mask and image grids agree if spacings differ by at most this fraction, origins by at most this
#: fraction of the smallest spacing, and direction cosines by at most DIRECTION_TOLERANCE.
#: NIfTI keeps geometry in 32-bit floats, so exact equality would reject genuine pairs.
SPACING_TOLERANCE = 1e-4
ORIGIN_TOLERANCE = 1e-3
DIRECTION_TOLERANCE = 1e-4


def validate_volume(image: sitk.Image, path: str | Path | None) -> None:
    """Raise :class:`InputError` unless ``image`` is a usable scalar 3D scan.

    Rejected: not 3D (2D, 4D), vector or multi-component pixels (also how SimpleITK may read a 4D
    NIfTI), complex pixels, fewer than 8 voxels along an axis, spacing ≤ 0 or > 20 mm, NaN or
    infinite voxels, all-zero or constant intensities.

    Args:
        image: the volume as read by :func:`AnomalySegLib.io.volume_io.read_volume`.
        path: the file it came from, for the message (``None`` for in-memory images).
    """
    _check_scalar_3d(image, path, what="a 3D volume")
    _check_size_and_spacing(image, path)
    values = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(values.dtype, np.floating):
        non_finite = int(values.size - np.count_nonzero(np.isfinite(values)))
        if non_finite:
            raise InputError(path or "the image", f"has {non_finite} NaN or infinite voxels; all intensities must be finite")
    low, high = values.min(), values.max()
    if low == high == 0:
        raise InputError(path or "the image", "is all zero (an empty volume)")
    if low == high:
        raise InputError(path or "the image", f"has the same intensity ({low:g}) in every voxel")


def validate_mask(mask: sitk.Image, image: sitk.Image, mask_path: str | Path | None,
                  image_path: str | Path | None = None) -> None:
    """Raise :class:`InputError` unless ``mask`` is a usable brain mask for ``image``.

    A usable mask is scalar 3D, on the image's voxel grid (size; spacing, origin and direction within
    the tolerances above), binary or a label map (voxels > 0 are brain, values are whole numbers ≥ 0)
    and not empty.

    Args:
        mask: the brain mask as read from ``mask_path``.
        image: the scan the mask belongs to (already validated).
        mask_path: the mask file, for the message.
        image_path: the scan file, named in grid mismatch messages when given.
    """
    _check_scalar_3d(mask, mask_path, what="a 3D mask")
    differences = grid_differences(mask, image)
    if differences:
        against = f"the image {Path(image_path).name}" if image_path is not None else "the image"
        raise InputError(mask_path or "the mask", f"is not on the grid of {against}: {'; '.join(differences)}")
    values = sitk.GetArrayViewFromImage(mask)
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)):
            raise InputError(mask_path or "the mask", "has NaN or infinite values; a binary or label mask is needed")
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise InputError(mask_path or "the mask", f"has non-integer values (e.g. {fractional.flat[0]:g}); "
                             "a binary or label mask is needed")
    if values.min() < 0:
        raise InputError(mask_path or "the mask", f"has negative values (down to {values.min():g}); "
                         "a binary or label mask (0 = background, > 0 = brain) is needed")
    if not np.any(values > 0):
        raise InputError(mask_path or "the mask", "is empty (no voxel > 0)")


def grid_differences(image: sitk.Image, reference: sitk.Image) -> list[str]:
    """How the voxel grid of ``image`` differs from ``reference``'s, as short phrases (empty if none)."""
    differences = []
    if image.GetSize() != reference.GetSize():
        differences.append(f"size {_format_size(image.GetSize())} vs {_format_size(reference.GetSize())}")
    spacing, reference_spacing = np.array(image.GetSpacing()), np.array(reference.GetSpacing())
    if spacing.shape != reference_spacing.shape:
        return differences + [f"{spacing.size}D vs {reference_spacing.size}D"]
    if not np.allclose(spacing, reference_spacing, rtol=SPACING_TOLERANCE, atol=0):
        differences.append(f"spacing {_format_vector(spacing)} vs {_format_vector(reference_spacing)} mm")
    origin_tolerance = ORIGIN_TOLERANCE * float(reference_spacing.min())
    origin, reference_origin = np.array(image.GetOrigin()), np.array(reference.GetOrigin())
    if np.max(np.abs(origin - reference_origin)) > origin_tolerance:
        differences.append(f"origin {_format_vector(origin)} vs {_format_vector(reference_origin)} mm")
    direction, reference_direction = np.array(image.GetDirection()), np.array(reference.GetDirection())
    if np.max(np.abs(direction - reference_direction)) > DIRECTION_TOLERANCE:
        differences.append(f"direction {_format_vector(direction)} vs {_format_vector(reference_direction)}")
    return differences


def _check_scalar_3d(image: sitk.Image, path: str | Path | None, what: str) -> None:
    dimension = image.GetDimension()
    if dimension != 3:
        detail = {2: " (a single slice)", 4: f" (4D series of {image.GetSize()[-1]} volumes)"}.get(dimension, "")
        raise InputError(path or "the image", f"has {dimension} dimensions{detail}; {what} is needed")
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        raise InputError(path or "the image", f"has {components} components per voxel (a 4D series, colour or vector "
                         f"image); {what} of scalar intensities is needed")
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(path or "the image", f"has complex-valued voxels; {what} of real intensities is needed")


def _check_size_and_spacing(image: sitk.Image, path: str | Path | None) -> None:
    size = image.GetSize()
    if min(size) < MIN_VOXELS_PER_AXIS:
        raise InputError(path or "the image", f"is only {_format_size(size)} voxels; at least {MIN_VOXELS_PER_AXIS} "
                         "along each axis are needed")
    spacing = image.GetSpacing()
    if not all(0 < value <= MAX_SPACING_MM for value in spacing):
        raise InputError(path or "the image", f"has voxel spacing {_format_vector(spacing)} mm; each must be > 0 and "
                         f"≤ {MAX_SPACING_MM:g} mm")
    field_of_view = tuple(n * d for n, d in zip(size, spacing))
    if min(field_of_view) < MIN_FIELD_OF_VIEW_MM:
        raise InputError(path or "the image", f"is too small to be a brain scan (field of view "
                         f"{_format_fov(field_of_view)} mm, minimum {MIN_FIELD_OF_VIEW_MM:g} mm along each axis)")


def check_declared_size(size: tuple[int, ...], components: int, path: str | Path) -> None:
    """Raise :class:`InputError` if a file's header declares more than :data:`MAX_VOXELS` voxel values."""
    values = int(np.prod(size, dtype=np.int64)) * max(1, components)
    if values > MAX_VOXELS:
        raise InputError(path, f"declares {_format_size(size)} voxels{f' × {components} components' if components > 1 else ''}"
                         f" ({values:,} values); at most {MAX_VOXELS:,} are accepted (e.g. 1024×1024×512)")


def _format_size(size: tuple[int, ...]) -> str:
    return "×".join(str(value) for value in size)


def _format_fov(values: tuple[float, ...]) -> str:
    return " × ".join(f"{value:.0f}" for value in values)


def _format_vector(values: tuple[float, ...] | np.ndarray) -> str:
    return "(" + ", ".join(f"{value:.6g}" for value in values) + ")"
