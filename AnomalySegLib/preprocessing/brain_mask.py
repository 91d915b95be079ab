"""Brain and head masks found from the intensities alone (no registration).

Heuristic for already skull-stripped input (documented in :class:`~.spec.BrainMaskSpec`): stripping
tools set every voxel outside the brain to one value (usually 0), so a large share of the volume holds
exactly the image minimum, and the region above it is one brain-sized blob (~1000–2000 ml with CSF).
A skull-on head has few voxels at exactly the minimum (scanner noise) or, if the background was
zeroed, a head-sized region (≥ 3000 ml).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from AnomalySegLib.preprocessing.spec import BrainMaskSpec


def largest_component(mask: sitk.Image) -> sitk.Image:
    """The largest 26-connected region of a binary mask (uint8 0/1); an empty mask stays empty."""
    components = sitk.ConnectedComponent(sitk.Cast(mask > 0, sitk.sitkUInt8), True)
    return sitk.Cast(sitk.RelabelComponent(components, sortByObjectSize=True) == 1, sitk.sitkUInt8)


def fill_holes(mask: sitk.Image) -> sitk.Image:
    """Fill enclosed cavities in 3D, then in every slice of the slowest array axis (axial for LPS
    images): dark CSF spaces can reach the image border in 3D (e.g. through the foramen magnum when
    the field of view ends at the neck) while being enclosed in most axial slices.

    Uses scipy's ``binary_fill_holes`` with an in-plane structuring element for the slice-wise pass.
    """
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.Cast(mask > 0, sitk.sitkUInt8))) > 0
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    filled = ndimage.binary_fill_holes(filled, structure=in_plane)
    result = sitk.GetImageFromArray(filled.astype(np.uint8))
    result.CopyInformation(mask)
    return result


def skull_stripped_mask(image: sitk.Image, spec: BrainMaskSpec) -> sitk.Image | None:
    """The brain mask (uint8 0/1, on ``image``'s grid) if ``image`` looks skull-stripped, else ``None``.

    Brain = the largest connected region strictly above the image minimum, holes filled.
    """
    values = sitk.GetArrayViewFromImage(image)
    minimum = values.min()
    at_minimum = float(np.count_nonzero(values == minimum)) / values.size
    if at_minimum < spec.stripped_min_background_fraction:
        return None
    brain = fill_holes(largest_component(image > float(minimum)))
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    volume_ml = float(np.count_nonzero(sitk.GetArrayViewFromImage(brain))) * voxel_ml
    low, high = spec.stripped_volume_ml
    return brain if low <= volume_ml <= high else None


def head_mask(image: sitk.Image) -> sitk.Image:
    """The head (uint8 0/1): largest Otsu-foreground region with holes filled.

    Used as the N4 mask for skull-on input (the brain mask is only known after registration)."""
    return fill_holes(largest_component(sitk.OtsuThreshold(image, 0, 1)))


def dilate_mm(mask: sitk.Image, distance_mm: float) -> sitk.Image:
    """``mask`` grown by ``distance_mm`` (Euclidean, physical units); uint8 0/1.

    Thresholding a distance map costs the same for any distance, unlike a ball-shaped dilation.
    """
    distance = sitk.SignedMaurerDistanceMap(sitk.Cast(mask > 0, sitk.sitkUInt8), insideIsPositive=False,
                                            squaredDistance=False, useImageSpacing=True)
    return sitk.Cast(distance <= distance_mm, sitk.sitkUInt8)
