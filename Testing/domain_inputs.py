"""Inputs for the domain-check tests, built deterministically from real scans or from scratch.

Real clinical variants (thick axial slabs) must pass the check; the others are not brain MRI (or not
usable as one) and must be refused: white noise, a smooth sphere, a CT-like head in Hounsfield units, an
upside-down head (voxels flipped head-to-foot, header unchanged), a knee/abdomen-like MRI made of large
blobs, and a brain scan cropped to a 20 mm slab.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def axial_axis(image: sitk.Image) -> int:
    """The SimpleITK axis (0, 1, 2) whose direction is closest to superior-inferior."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return int(np.argmax(np.abs(direction[2])))


def thick_slices(image: sitk.Image, thickness_mm: float) -> sitk.Image:
    """A clinical-like axial stack: each slice the average of a ``thickness_mm`` slab (box profile),
    slices ``thickness_mm`` apart; in-plane geometry unchanged."""
    axis = axial_axis(image)
    spacing = list(image.GetSpacing())
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    array_axis = 2 - axis
    width = max(1, int(round(thickness_mm / spacing[axis])))
    slabs = ndimage.uniform_filter1d(values, width, axis=array_axis, mode="nearest")
    step = thickness_mm / spacing[axis]
    positions = np.arange((width - 1) / 2, values.shape[array_axis] - (width - 1) / 2 - 1e-6, step)
    sampled = ndimage.map_coordinates(
        slabs, np.meshgrid(*[positions if a == array_axis else np.arange(n)
                             for a, n in enumerate(values.shape)], indexing="ij"), order=1)
    result = sitk.GetImageFromArray(sampled.astype(np.float32))
    first = [0.0, 0.0, 0.0]
    first[axis] = float(positions[0])
    spacing[axis] = thickness_mm
    result.SetSpacing(spacing)
    result.SetDirection(image.GetDirection())
    result.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(first))
    return result


def upside_down(image: sitk.Image) -> sitk.Image:
    """The same header with the voxels mirrored head-to-foot: the head stands on its vertex."""
    values = sitk.GetArrayFromImage(image)
    flipped = sitk.GetImageFromArray(np.flip(values, axis=2 - axial_axis(image)).copy())
    flipped.CopyInformation(image)
    return flipped


def axial_slab(image: sitk.Image, thickness_mm: float = 20.0) -> sitk.Image:
    """The central ``thickness_mm`` of the head along the axial axis (partial coverage taken to the extreme)."""
    axis = axial_axis(image)
    size = list(image.GetSize())
    count = max(1, int(round(thickness_mm / image.GetSpacing()[axis])))
    index = [0, 0, 0]
    index[axis] = (size[axis] - count) // 2
    size[axis] = count
    return sitk.RegionOfInterest(image, size, index)


def white_noise(size: int = 128, seed: int = 0) -> sitk.Image:
    """Uniform random noise in [0, 1000), ``size``³ voxels of 1 mm."""
    values = np.random.default_rng(seed).uniform(0, 1000, (size,) * 3).astype(np.float32)
    return _image(values, 1.0)


def sphere(size: int = 160, radius_mm: float = 70.0, seed: int = 0) -> sitk.Image:
    """A bright smooth ball (radius ``radius_mm``) in a dark field with mild noise; 1 mm voxels."""
    grid = np.indices((size,) * 3, dtype=np.float32) - (size - 1) / 2
    ball = (np.sqrt((grid ** 2).sum(0)) <= radius_mm).astype(np.float32)
    values = 800 * ndimage.gaussian_filter(ball, 2.0)
    values += np.random.default_rng(seed).normal(0, 10, values.shape)
    return _image(np.abs(values).astype(np.float32), 1.0)


def ct_like_head(t1_head: sitk.Image, brain_mask: sitk.Image, seed: int = 0) -> sitk.Image:
    """A head CT in Hounsfield units made from a T1 head and its brain mask (same grid): air −1000,
    scalp 40, skull (dark non-brain tissue inside the head) 1000, brain 25–40 with CSF ~8, noise 5."""
    t1 = sitk.GetArrayFromImage(t1_head).astype(np.float32)
    brain = sitk.GetArrayFromImage(brain_mask) > 0
    head = ndimage.binary_fill_holes(t1 > 0.15 * np.percentile(t1, 99))
    inside = t1[brain]
    relative = np.clip((t1 - np.percentile(inside, 2)) / (np.percentile(inside, 98) - np.percentile(inside, 2)), 0, 1)
    hu = np.full(t1.shape, -1000.0, np.float32)
    hu[head] = 40.0
    skull = head & ~brain & (relative < 0.3) & ndimage.binary_dilation(brain, iterations=12)
    hu[skull] = 1000.0
    hu[brain] = np.where(relative[brain] < 0.35, 8.0, 40.0 - 12.0 * relative[brain])
    hu += np.random.default_rng(seed).normal(0, 5, hu.shape).astype(np.float32)
    result = sitk.GetImageFromArray(hu)
    result.CopyInformation(t1_head)
    return result


def blob_body_mri(seed: int = 0) -> sitk.Image:
    """A knee/abdomen-like MRI made of large blobs: an elliptic body (bright fat rim, muscle-grey
    inside) holding a few large organ-like ellipsoids of different brightness; 240×200×160 at 1 mm."""
    rng = np.random.default_rng(seed)
    shape = (160, 200, 240)  # z, y, x
    z, y, x = np.indices(shape, dtype=np.float32)
    centre = np.array(shape, np.float32) / 2
    body = ((x - centre[2]) / 110) ** 2 + ((y - centre[1]) / 80) ** 2 <= 1.0
    inner = ((x - centre[2]) / 98) ** 2 + ((y - centre[1]) / 68) ** 2 <= 1.0
    values = np.where(body, 900.0, 0.0) * 1.0
    values[inner] = 450.0
    for _ in range(6):
        c = centre + rng.uniform(-1, 1, 3) * np.array([40, 30, 50])
        radii = rng.uniform(15, 35, 3)
        blob = (((z - c[0]) / radii[0]) ** 2 + ((y - c[1]) / radii[1]) ** 2 + ((x - c[2]) / radii[2]) ** 2) <= 1
        values[blob & inner] = rng.uniform(150, 800)
    values = ndimage.gaussian_filter(values, 1.5) + rng.normal(0, 15, shape)
    return _image(np.abs(values).astype(np.float32), 1.0)


def _image(values: np.ndarray, spacing_mm: float) -> sitk.Image:
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((spacing_mm,) * 3)
    image.SetOrigin(tuple(-(n - 1) * spacing_mm / 2 for n in image.GetSize()))
    return image
