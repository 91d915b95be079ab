"""Affine registration of an input image to the template (SimpleITK ``ImageRegistrationMethod``).

Mattes mutual information, regular-step gradient descent, in two stages: a 7-parameter similarity
transform (rotation, shift, one scale) over two resolution levels from a moments initialisation
(centres of the intensity distributions), then the full 12-parameter affine at the finer level. The
similarity stage keeps the optimiser out of the rotation/anisotropic-scale trade-offs a direct affine
fit gets lost in: on the template moved by random affines (±15°, ±20 mm, ±15 % per axis), direct
affine optimisation missed by 3–6 mm in 3 of 6 seeds, similarity → affine stayed below 0.1 mm in all.

The result maps **template (model space) points to input (native) points**, as ITK registration
returns it: it is the transform that resamples a native image into model space, and its inverse
resamples a model-space map back onto the native grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk

from AnomalySegLib.preprocessing.spec import RegistrationSpec


@dataclass(frozen=True)
class RegistrationResult:
    """``transform``: template → native points (12-parameter affine); ``metric``: final Mattes MI
    value (negative; lower is better); ``iterations``: optimiser iterations of (similarity, affine)."""

    transform: sitk.AffineTransform
    metric: float
    iterations: tuple[int, int]


def register_affine(fixed: sitk.Image, moving: sitk.Image, spec: RegistrationSpec,
                    fixed_mask: sitk.Image | None = None) -> RegistrationResult:
    """Affine transform aligning ``moving`` (input) to ``fixed`` (template).

    Args:
        fixed: template image.
        moving: input image on its working grid (bias-corrected).
        fixed_mask: optional uint8 mask on ``fixed``'s grid restricting the metric (e.g. dilated brain).
    """
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    similarity = sitk.Similarity3DTransform(sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS))
    _, similarity_iterations = _optimise(fixed, moving, similarity, spec, spec.similarity_shrink_factors,
                                         spec.similarity_smoothing_sigmas_mm, fixed_mask)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    metric, affine_iterations = _optimise(fixed, moving, affine, spec, spec.affine_shrink_factors,
                                          spec.affine_smoothing_sigmas_mm, fixed_mask)
    return RegistrationResult(transform=affine, metric=metric,
                              iterations=(similarity_iterations, affine_iterations))


def _optimise(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, spec: RegistrationSpec,
              shrink_factors: tuple[int, ...], smoothing_sigmas_mm: tuple[float, ...],
              fixed_mask: sitk.Image | None) -> tuple[float, int]:
    """Optimise ``transform`` in place; returns the final metric value and the last level's iterations."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=spec.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(spec.sampling_fraction, spec.random_seed)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=spec.iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    # parameter scales from the physical shift each parameter causes (rotations/scales vs mm shifts)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return float(method.GetMetricValue()), int(method.GetOptimizerIteration())
