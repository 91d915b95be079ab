"""N4 bias-field correction, estimated on a shrunk image and applied at full resolution.

N4 (Tustison et al. 2010, SimpleITK's ``N4BiasFieldCorrectionImageFilter``) fits a smooth B-spline
log bias field. Fitting it on an image shrunk ×4 costs a fraction of the full-resolution fit; the
field is smooth on scales of centimetres, so evaluating it on the coarse grid and interpolating it
linearly onto any other grid (native or working) loses nothing that matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk

from AnomalySegLib.preprocessing.brain_mask import head_mask
from AnomalySegLib.preprocessing.spec import BiasFieldSpec


@dataclass(frozen=True)
class BiasField:
    """A fitted log bias field on the shrunk estimation grid (float32, physical space)."""

    log_field: sitk.Image

    def log_field_on(self, reference: sitk.Image) -> sitk.Image:
        """The log bias field on ``reference``'s grid (linear interpolation, nearest value outside)."""
        return sitk.Resample(self.log_field, reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                             sitk.sitkFloat32, True)

    def correct(self, image: sitk.Image) -> sitk.Image:
        """``image / exp(log field)`` on ``image``'s own grid, float32."""
        return sitk.Cast(image, sitk.sitkFloat32) / sitk.Exp(self.log_field_on(image))


def estimate_bias_field(image: sitk.Image, mask: sitk.Image | None, spec: BiasFieldSpec) -> BiasField:
    """Fit N4 to ``image`` (float, > 0 inside the mask) shrunk by ``spec.shrink_factor``.

    Args:
        image: the working image (any grid).
        mask: uint8 0/1 on ``image``'s grid; only voxels inside are used for the fit. ``None``: the head,
            found on the shrunk image (:func:`~.brain_mask.head_mask`; on the 1 mm working grid it cost
            more than the fit).
    """
    factor = [spec.shrink_factor] * image.GetDimension()
    shrunk = sitk.Shrink(sitk.Cast(image, sitk.sitkFloat32), factor)
    if mask is None:
        shrunk_mask = head_mask(shrunk)
    else:
        shrunk_mask = sitk.Cast(sitk.Shrink(sitk.Cast(mask, sitk.sitkUInt8), factor) > 0, sitk.sitkUInt8)
    # N4 works on log intensities: keep them positive (the fit ignores voxels outside the mask)
    shrunk = sitk.Maximum(shrunk, 1e-3)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(spec.iterations_per_level))
    n4.SetConvergenceThreshold(spec.convergence_threshold)
    n4.Execute(shrunk, shrunk_mask)
    return BiasField(log_field=sitk.Cast(n4.GetLogBiasFieldAsImage(shrunk), sitk.sitkFloat32))
