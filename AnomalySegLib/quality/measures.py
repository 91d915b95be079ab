"""The numbers the domain check compares with the model's training data (names and units: :mod:`.catalogue`).

Two groups, so that a hopeless input is refused before the ~15 s of preprocessing:

- :func:`header_measures` from the native volume alone (spacing, voxel-to-voxel structure, CT-like
  intensities), in well under a second;
- :func:`model_space_measures` from what preprocessing already computed: the registration transform,
  the native geometry and the rescaled model-space image and mask (no further registration or
  resampling of the native volume).
"""

from __future__ import annotations

import functools
import math
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.stats import wasserstein_distance

from AnomalySegLib.preprocessing.model_space import resample_to_model
from AnomalySegLib.preprocessing.pipeline import PreprocessedCase
from AnomalySegLib.preprocessing.spec import ModelGrid
from AnomalySegLib.preprocessing.template import load_template
from AnomalySegLib.quality.catalogue import HISTOGRAM_BINS, HOUNSFIELD_AIR

#: Step (template voxels) at which the template brain is sampled for the field-of-view fraction.
FOV_SAMPLING_STEP = 2
#: Registration similarity: Gaussian smoothing (mm) of both images and erosion (mm) of the template brain
#: before correlating. The smoothing keeps the brain's large structures (white matter, ventricles, deep
#: grey matter), the erosion leaves out the brain's rim, where the template mask of a skull-on scan holds
#: CSF, dura and skull and where a ball or any bright blob also correlates with a brain (a smooth sphere
#: scored 0.18 against 0.20 for MRBrainTumor1 without them; -0.00 against 0.29 with them).
SIMILARITY_SMOOTHING_MM = 3.0
SIMILARITY_EROSION_MM = 8.0


def header_measures(image: sitk.Image) -> dict[str, float]:
    """Measures of the native volume that need no preprocessing.

    ``slice_thickness_mm``/``in_plane_spacing_mm``: largest and second-largest voxel spacing (mm);
    ``neighbour_correlation``: Pearson correlation of each voxel with its neighbour along the first
    array axis of the finest spacing (anatomy: > 0.9; white noise: ~0); ``hounsfield_air_fraction``:
    share of voxels below :data:`HOUNSFIELD_AIR`.
    """
    spacing = sorted(image.GetSpacing())
    values = sitk.GetArrayViewFromImage(image)  # [z, y, x]; sitk axis i is numpy axis 2 - i
    finest_axis = 2 - int(np.argmin(image.GetSpacing()))
    return {
        "slice_thickness_mm": float(spacing[2]),
        "in_plane_spacing_mm": float(spacing[1]),
        "neighbour_correlation": _neighbour_correlation(values, finest_axis),
        "hounsfield_air_fraction": float(np.count_nonzero(values < HOUNSFIELD_AIR)) / values.size,
    }


def model_space_measures(case: PreprocessedCase, reference_histogram: np.ndarray | None) -> dict[str, float]:
    """Measures of a preprocessed case against the template (and the training intensity histogram).

    Args:
        case: the output of preprocessing (model-space image in [0, 1] and mask; transform template →
            native; ``info["native_geometry"]``).
        reference_histogram: the training scans' mean in-brain histogram (:data:`HISTOGRAM_BINS` bins on
            [0, 1], sums to 1); ``None`` leaves out ``intensity_distance``.
    """
    image, mask, _ = case.arrays()
    template_image, template_core = _template_on_grid(case.spec.template, case.spec.grid)
    sigma = [SIMILARITY_SMOOTHING_MM / s for s in reversed(case.spec.grid.spacing)]  # [z, y, x] voxels
    matrix = np.asarray(case.transform.GetMatrix(), float).reshape(3, 3)
    # judged in this order: a brain mostly outside the field of view explains a poor correlation
    measures = {
        "fov_brain_fraction": _fov_brain_fraction(case),
        "head_tilt_deg": _rotation_angle_deg(matrix),
        "registration_similarity": _normalized_correlation(ndimage.gaussian_filter(image, sigma), template_image,
                                                           mask & template_core),
        "brain_volume_ml": _template_brain_ml(case.spec.template) * abs(float(np.linalg.det(matrix))),
    }
    if reference_histogram is not None:
        measures["intensity_distance"] = intensity_distance(brain_histogram(image, mask), reference_histogram)
    return measures


def brain_histogram(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised histogram (:data:`HISTOGRAM_BINS` bins on [0, 1], sums to 1) of ``image[mask]``;
    arrays ``[Z, Y, X]`` in model space. An empty mask gives a flat histogram."""
    counts, _ = np.histogram(image[mask], bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    total = counts.sum()
    return counts / total if total else np.full(HISTOGRAM_BINS, 1.0 / HISTOGRAM_BINS)


def intensity_distance(histogram: np.ndarray, reference: np.ndarray) -> float:
    """Earth mover's (Wasserstein-1) distance between two histograms on [0, 1], in model intensity units."""
    centres = (np.arange(HISTOGRAM_BINS) + 0.5) / HISTOGRAM_BINS
    return float(wasserstein_distance(centres, centres, histogram, reference))


def _neighbour_correlation(values: np.ndarray, axis: int) -> float:
    """Pearson correlation of ``values`` with itself shifted by one voxel along ``axis`` (0 if constant).

    Every other plane across ``axis`` is used: the estimate is the same and it costs half."""
    sampled = np.moveaxis(values, axis, -1)[::2]
    first = sampled[..., :-1].astype(np.float32).ravel()
    second = sampled[..., 1:].astype(np.float32).ravel()
    if first.size < 2 or first.std() == 0 or second.std() == 0:
        return 0.0
    return float(np.corrcoef(first, second)[0, 1])


def _normalized_correlation(first: np.ndarray, second: np.ndarray, where: np.ndarray) -> float:
    if np.count_nonzero(where) < 2:
        return 0.0
    a, b = first[where].astype(np.float64), second[where].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def _rotation_angle_deg(matrix: np.ndarray) -> float:
    """Angle (degrees) of the rotation nearest to ``matrix`` (polar decomposition); a mirroring matrix
    (negative determinant) counts as 180°: no rotation of a head gives its mirror image."""
    u, _, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        return 180.0
    cosine = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)))


def _fov_brain_fraction(case: PreprocessedCase) -> float:
    """Share of the template brain (sampled every :data:`FOV_SAMPLING_STEP` voxels) that the registration
    maps inside the native image's voxel grid."""
    points = _template_brain_points(case.spec.template)  # [N, 3] physical (LPS, mm), template space
    transform = case.transform
    matrix = np.asarray(transform.GetMatrix(), float).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), float)
    translation = np.asarray(transform.GetTranslation(), float)
    native_points = (points - centre) @ matrix.T + centre + translation
    geometry = case.info["native_geometry"]
    direction = np.asarray(geometry["direction"], float).reshape(3, 3)
    spacing = np.asarray(geometry["spacing"], float)
    size = np.asarray(geometry["size"], float)
    index = (native_points - np.asarray(geometry["origin"], float)) @ direction / spacing  # D orthonormal
    inside = np.all((index >= -0.5) & (index <= size - 0.5), axis=1)
    return float(inside.mean()) if len(inside) else 0.0


@functools.lru_cache(maxsize=4)
def _template_brain_points(template_name: str) -> np.ndarray:
    mask = load_template(template_name).mask
    step = FOV_SAMPLING_STEP
    zyx = np.argwhere(sitk.GetArrayViewFromImage(mask)[::step, ::step, ::step] > 0) * step
    index = zyx[:, ::-1].astype(float)  # (x, y, z) voxel indices
    direction = np.asarray(mask.GetDirection(), float).reshape(3, 3)
    return np.asarray(mask.GetOrigin(), float) + (index * np.asarray(mask.GetSpacing(), float)) @ direction.T


@functools.lru_cache(maxsize=4)
def _template_brain_ml(template_name: str) -> float:
    mask = load_template(template_name).mask
    voxels = np.count_nonzero(sitk.GetArrayViewFromImage(mask))
    return float(voxels * np.prod(mask.GetSpacing()) / 1000.0)


@functools.lru_cache(maxsize=4)
def _template_on_grid(template_name: str, grid: ModelGrid) -> tuple[np.ndarray, np.ndarray]:
    """On the model grid, ``[Z, Y, X]``: the skull-stripped template smoothed by
    :data:`SIMILARITY_SMOOTHING_MM` (float32) and its brain mask eroded by :data:`SIMILARITY_EROSION_MM` (bool)."""
    template = load_template(template_name)
    image = sitk.GetArrayFromImage(resample_to_model(template.t1_brain, sitk.Transform(), grid))
    mask = sitk.GetArrayFromImage(resample_to_model(template.mask, sitk.Transform(), grid, binary=True)) > 0
    spacing = np.asarray(grid.spacing[::-1], float)  # [z, y, x] mm
    image = ndimage.gaussian_filter(image.astype(np.float32), SIMILARITY_SMOOTHING_MM / spacing)
    depth_mm = ndimage.distance_transform_edt(mask, sampling=spacing)  # distance to the brain's edge
    return image, depth_mm >= SIMILARITY_EROSION_MM
