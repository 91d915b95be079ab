"""Affine registration of an input image to the template (SimpleITK ``ImageRegistrationMethod``).

Mattes mutual information, regular-step gradient descent, in two stages: a 7-parameter similarity
transform (rotation, shift, one scale) over its resolution levels from a moments initialisation
(centres of the intensity distributions), then the full 12-parameter affine. The similarity stage keeps
the optimiser out of the rotation/anisotropic-scale trade-offs a direct affine fit gets lost in: on the
template moved by random affines (±15°, ±20 mm, ±15 % per axis), direct affine optimisation missed by
3–6 mm in 3 of 6 seeds, similarity → affine stayed below 0.1 mm in all.

**Pyramid.** Each resolution level is an image of its own: block-averaged by the shrink factor
(``BinShrink``), then Gaussian-smoothed by what the block average leaves of the level's σ. Both the
fixed and the moving image are reduced, so the metric interpolates and differentiates a 2 or 4 mm
image, not the 1 mm one; the fixed (template) levels and their masks are built once per template and
spec (:func:`template_pyramid`). ITK's own multi-resolution scheme shrinks only the sampling grid and
smooths both images at full resolution at every level of every stage: 7 of its 8.5 s on MRBrainTumor1.

Every level is one optimisation with its own random sample set (seed ``random_seed + level``): two
consecutive optimisations on the same sample points (similarity, then affine, on one level) diverged
by 20–30 mm in 5 of 7 test volumes.

The result maps **template (model space) points to input (native) points**, as ITK registration
returns it: it is the transform that resamples a native image into model space, and its inverse
resamples a model-space map back onto the native grid.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.preprocessing.brain_mask import dilate_mm
from AnomalySegLib.preprocessing.spec import RegistrationSpec
from AnomalySegLib.preprocessing.template import load_template

Level = tuple[int, float]  # (shrink factor, smoothing σ in mm)


@dataclass(frozen=True)
class RegistrationResult:
    """``transform``: template → native points (12-parameter affine); ``metric``: final Mattes MI
    value (negative; lower is better); ``iterations``: optimiser iterations of the last similarity
    level and of the last affine level."""

    transform: sitk.AffineTransform
    metric: float
    iterations: tuple[int, int]


@dataclass(frozen=True)
class FixedPyramid:
    """The fixed image at full resolution and at every level of ``spec``, with the metric's mask.

    ``levels`` maps ``(shrink, σ mm)`` to ``(image float32, mask uint8 0/1 or None)`` on that level's grid.
    """

    image: sitk.Image
    levels: dict[Level, tuple[sitk.Image, sitk.Image | None]]


def reduce(image: sitk.Image, shrink: int, sigma_mm: float) -> sitk.Image:
    """``image`` (float32) averaged over ``shrink``³ blocks, then smoothed so that the total blur is a
    Gaussian of σ ≈ ``sigma_mm`` (a block average of width ``w`` has variance ``(w² − s²)/12`` in
    units of the input spacing ``s``)."""
    reduced = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), [shrink] * image.GetDimension())
    spacing = min(image.GetSpacing())
    remaining = sigma_mm ** 2 - ((shrink * spacing) ** 2 - spacing ** 2) / 12
    return sitk.SmoothingRecursiveGaussian(reduced, remaining ** 0.5) if remaining > 0 else reduced


def spec_levels(spec: RegistrationSpec) -> tuple[list[Level], list[Level]]:
    """The (shrink, σ) levels of the similarity and of the affine stage, coarse to fine."""
    return (list(zip(spec.similarity_shrink_factors, spec.similarity_smoothing_sigmas_mm)),
            list(zip(spec.affine_shrink_factors, spec.affine_smoothing_sigmas_mm)))


def fixed_pyramid(fixed: sitk.Image, mask: sitk.Image | None, spec: RegistrationSpec) -> FixedPyramid:
    """Every level of ``fixed``; the metric's mask on each level is ``mask`` dilated by
    ``spec.fixed_mask_dilation_mm`` there (no mask: the whole image)."""
    levels: dict[Level, tuple[sitk.Image, sitk.Image | None]] = {}
    similarity, affine = spec_levels(spec)
    for shrink, sigma in similarity + affine:
        if (shrink, sigma) in levels:
            continue
        image = reduce(fixed, shrink, sigma)
        level_mask = None
        if mask is not None:
            on_level = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            level_mask = dilate_mm(on_level, spec.fixed_mask_dilation_mm)
        levels[(shrink, sigma)] = (image, level_mask)
    return FixedPyramid(image=sitk.Cast(fixed, sitk.sitkFloat32), levels=levels)


@functools.lru_cache(maxsize=8)
def template_pyramid(template_name: str, skull_on: bool, spec: RegistrationSpec) -> FixedPyramid:
    """The registration target for one template and spec, built once per process.

    ``skull_on``: the skull-on T1 with the dilated brain mask (for input with skull); otherwise the
    skull-stripped T1 over the whole image (for input masked to its brain).
    """
    template = load_template(template_name)
    if skull_on:
        return fixed_pyramid(template.t1, template.mask, spec)
    return fixed_pyramid(template.t1_brain, None, spec)


def register_affine(fixed: FixedPyramid, moving: sitk.Image, spec: RegistrationSpec) -> RegistrationResult:
    """Affine transform aligning ``moving`` (input) to ``fixed`` (template).

    Args:
        fixed: the template's pyramid (:func:`template_pyramid` or :func:`fixed_pyramid` with ``spec``).
        moving: input image on its working grid (bias-corrected); shrink factors apply to its spacing.
    """
    similarity_levels, affine_levels = spec_levels(spec)
    moving_levels = {level: reduce(moving, *level) for level in fixed.levels}
    coarsest = similarity_levels[0]
    similarity = sitk.Similarity3DTransform(sitk.CenteredTransformInitializer(
        fixed.levels[coarsest][0], moving_levels[coarsest], sitk.Similarity3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS))
    seed = spec.random_seed
    similarity_iterations = 0
    for level in similarity_levels:
        _, similarity_iterations = _optimise(*fixed.levels[level], moving_levels[level], similarity, spec, seed)
        seed += 1
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    metric, affine_iterations = 0.0, 0
    for level in affine_levels:
        metric, affine_iterations = _optimise(*fixed.levels[level], moving_levels[level], affine, spec, seed)
        seed += 1
    return RegistrationResult(transform=affine, metric=metric,
                              iterations=(similarity_iterations, affine_iterations))


def _optimise(fixed: sitk.Image, fixed_mask: sitk.Image | None, moving: sitk.Image, transform: sitk.Transform,
              spec: RegistrationSpec, seed: int) -> tuple[float, int]:
    """Optimise ``transform`` in place on one level; returns the final metric value and the iterations."""
    method = sitk.ImageRegistrationMethod()
    # One thread: Mattes MI sums its threads' joint histograms in no fixed order, so a multi-threaded run
    # differs from run to run in the last digits (Testing/test_determinism.py); on the 4/2 mm levels the
    # cost is small, and the same scan must give the same result.
    method.SetNumberOfThreads(1)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=spec.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(spec.sampling_fraction, seed)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=spec.iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    # parameter scales from the physical shift each parameter causes (rotations/scales vs mm shifts)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return float(method.GetMetricValue()), int(method.GetOptimizerIteration())


def random_affine(rng: np.random.Generator, centre: np.ndarray) -> sitk.AffineTransform:
    """A known test displacement about ``centre`` (mm): rotations up to ±15° about each axis, scales
    0.85–1.15 per axis, shifts up to ±20 mm (the registration check of the tests and the benchmark)."""
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(*np.radians(rng.uniform(-15, 15, 3)))
    matrix = np.array(rotation.GetMatrix()).reshape(3, 3) @ np.diag(rng.uniform(0.85, 1.15, 3))
    transform = sitk.AffineTransform(3)
    transform.SetCenter(np.asarray(centre, float).tolist())
    transform.SetMatrix(matrix.ravel().tolist())
    transform.SetTranslation(rng.uniform(-20, 20, 3).tolist())
    return transform


def mask_points(mask: sitk.Image, step: int = 20) -> np.ndarray:
    """Physical positions (mm) of every ``step``-th voxel inside ``mask``, ``[N, 3]``."""
    indices = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[::step, ::-1]
    return np.array([mask.TransformIndexToPhysicalPoint([int(i) for i in index]) for index in indices])


def point_errors_mm(found: sitk.Transform, truth: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """Distance (mm) between where ``found`` and ``truth`` map each of ``points`` (``[N, 3]``) → ``[N]``."""
    return np.linalg.norm(np.array([np.subtract(found.TransformPoint(p), truth.TransformPoint(p))
                                    for p in points]), axis=1)
