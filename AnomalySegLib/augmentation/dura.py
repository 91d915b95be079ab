"""Where a contrast agent brightens the dura and the dural venous sinuses: a map in template space
(issue #13, "contrast-enhanced T1 appearance").

In a contrast-enhanced T1 the dura (the falx between the hemispheres, the tentorium between the cerebrum
and the cerebellum, the dura of the convexity) and the venous sinuses inside it (superior sagittal,
straight and transverse sinuses) turn bright. They are thick and grey without contrast, so the top-hat of
:mod:`.acquisition` (thin structures that are already bright) never brightens them, and a model trained
without them takes them for anomalies. This module draws them from the anatomy of the ICBM 2009c template
(MNI space, LPS mm), once per process:

- the **tentorium** is a tent-shaped surface ``z = t(|x|, y)``: a robust least-squares fit of a quadratic in
  ``|x|`` and ``y`` to the darkest valley between two brighter tissues along each vertical column of the
  template's posterior fossa (the dark cleft between the occipital lobes and the cerebellum);
- the **falx** is the mid-sagittal plane above the tentorium, down to :data:`FALX_DEPTH_MM` below the brain
  surface (its free edge above the corpus callosum) or, behind :data:`FALX_TENTORIUM_Y_MM`, down to the
  tentorium it joins;
- the **convexity dura** is a shell on the brain-mask surface;
- the **sinuses** are tubes where these sheets meet: the superior sagittal sinus (falx × surface), the straight
  sinus (falx × tentorium) and the transverse sinuses (tentorium × surface, lateral and posterior).

Sheets weigh :data:`SHEET_WEIGHT`, sinuses 1. The map is a plausible anatomy, not a segmentation: the
acquisition simulation maps it into a source scan through that scan's registration and scales it by the drawn
enhancement.
"""

from __future__ import annotations

import functools

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from AnomalySegLib.preprocessing.template import load_template

#: Templates whose physical space is MNI (LPS mm, midline at x = 0) and therefore carry the map.
MNI_TEMPLATES = ("icbm2009c",)
#: Where the tentorium is searched for (MNI, LPS mm: +y posterior, +z superior) and fitted.
POSTERIOR_FOSSA_Y_MM = (40.0, 100.0)
POSTERIOR_FOSSA_HALF_WIDTH_MM = 50.0
TENTORIUM_Z_SEARCH_MM = (-45.0, 5.0)
TENTORIUM_Z_FIT_MM = (-35.0, 0.0)
#: The valley detector: brighter tissue within this distance above and below (mm), and a valley at least
#: this deep as a fraction of the median brain intensity.
VALLEY_REACH_MM = 6.0
VALLEY_MIN_DEPTH = 0.15
#: How far the tentorium sheet reaches: from this y (mm, the incisura around the midbrain) backwards, and
#: this far from the midline (mm; the fit's own points reach 50 mm).
TENTORIUM_Y_MIN_MM = 40.0
TENTORIUM_HALF_WIDTH_MM = 60.0
#: The falx reaches this far below the brain surface in front of :data:`FALX_TENTORIUM_Y_MM` (mm).
FALX_DEPTH_MM = 30.0
FALX_TENTORIUM_Y_MM = 40.0
#: Gaussian half-thickness (σ, mm) of the dural sheets and of the sinuses; the transverse sinuses start at
#: this y (mm) and this distance from the midline (mm).
SHEET_SIGMA_MM = 1.0
SINUS_SIGMA_MM = 2.0
TRANSVERSE_Y_MIN_MM = 60.0
TRANSVERSE_MIN_X_MM = 10.0
#: Weight of the dural sheets relative to the sinuses (1).
SHEET_WEIGHT = 0.6
#: Nothing further than this outside the brain mask (mm): only what lies at the brain counts.
REACH_OUTSIDE_MM = 6.0


def tentorium_coefficients(t1: sitk.Image, mask: sitk.Image) -> np.ndarray:
    """The fitted tent ``z = Σ c_i f_i(|x|, y)`` (:func:`_tent_terms`), from the template ``t1`` and its brain
    ``mask`` (MNI space). Returns the 6 coefficients.

    Raises:
        ValueError: fewer than 100 valley points were found (not a brain T1 in MNI space).
    """
    image = ndimage.gaussian_filter(sitk.GetArrayFromImage(t1).astype(np.float32), 1.0)
    brain = sitk.GetArrayFromImage(mask) > 0
    x, y, z = (_coordinate(t1, axis) for axis in range(3))
    spacing_z = t1.GetSpacing()[2]
    reach = max(1, int(round(VALLEY_REACH_MM / spacing_z)))
    # brightest value within `reach` voxels above and below each voxel (the array's axis 0 runs along z)
    above = np.max([np.roll(image, -shift, axis=0) for shift in range(1, reach + 1)], axis=0)
    below = np.max([np.roll(image, shift, axis=0) for shift in range(1, reach + 1)], axis=0)
    inside = brain & np.roll(brain, reach, axis=0) & np.roll(brain, -reach, axis=0)
    depth = np.where(inside, np.minimum(above, below) - image, 0.0)
    window = (z >= TENTORIUM_Z_SEARCH_MM[0]) & (z <= TENTORIUM_Z_SEARCH_MM[1])
    depth = np.where(window, depth, 0.0)
    deepest = depth.argmax(axis=0)  # [Y, X] index along z of the deepest valley per column
    column_depth = np.take_along_axis(depth, deepest[None], axis=0)[0]
    z_column = np.take_along_axis(np.broadcast_to(z, depth.shape), deepest[None], axis=0)[0]
    x_column, y_column = np.broadcast_arrays(x[0], y[0])  # [Y, X]
    found = ((column_depth > VALLEY_MIN_DEPTH * float(np.median(image[brain])))
             & (y_column >= POSTERIOR_FOSSA_Y_MM[0]) & (y_column <= POSTERIOR_FOSSA_Y_MM[1])
             & (np.abs(x_column) <= POSTERIOR_FOSSA_HALF_WIDTH_MM)
             & (z_column >= TENTORIUM_Z_FIT_MM[0]) & (z_column <= TENTORIUM_Z_FIT_MM[1]))
    if np.count_nonzero(found) < 100:
        raise ValueError(f"only {np.count_nonzero(found)} tentorium points found: is the template in MNI space?")
    terms = _tent_terms(x_column[found], y_column[found])
    target = z_column[found]
    # the cleft is not the only valley in a column (sulci, cerebellar fissures): trimmed least squares,
    # keeping the 60 % of points nearest the fit (at least those within 2 mm) each round
    keep = np.ones(target.shape, dtype=bool)
    for _ in range(10):
        coefficients, *_ = np.linalg.lstsq(terms[keep], target[keep], rcond=None)
        residual = np.abs(terms @ coefficients - target)
        keep = residual < max(2.0, float(np.percentile(residual[keep], 60)))
    return coefficients


def _tent_terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The fit's basis at LPS ``x``, ``y`` (mm): 1, a, a², b, b², a·b with a = |x|/50, b = (y − 70)/30;
    shape ``x.shape + (6,)``."""
    a, b = np.broadcast_arrays(np.abs(x) / POSTERIOR_FOSSA_HALF_WIDTH_MM, (y - 70.0) / 30.0)
    return np.stack([np.ones_like(a), a, a * a, b, b * b, a * b], axis=-1)


@functools.lru_cache(maxsize=2)
def dural_map(template_name: str = "icbm2009c") -> sitk.Image:
    """The enhancement weight (0–1, float32) of the dura and sinuses on the grid of template ``template_name``.

    Raises:
        ValueError: the template is not in MNI space (:data:`MNI_TEMPLATES`).
    """
    if template_name not in MNI_TEMPLATES:
        raise ValueError(f"the dural map needs a template in MNI space ({', '.join(MNI_TEMPLATES)}), "
                         f"not {template_name!r}")
    template = load_template(template_name)
    t1, mask = template.t1, template.mask
    brain = sitk.GetArrayFromImage(mask) > 0
    spacing_zyx = np.asarray(t1.GetSpacing()[::-1])
    x, y, z = (_coordinate(t1, axis) for axis in range(3))
    coefficients = tentorium_coefficients(t1, mask)
    tent = _tent_terms(x, y) @ coefficients  # [1, Y, X], mm
    tent_midline = _tent_terms(np.zeros_like(y), y) @ coefficients  # [1, Y, 1], mm
    depth = ndimage.distance_transform_edt(brain, sampling=spacing_zyx)  # mm below the brain surface
    outside = ndimage.distance_transform_edt(~brain, sampling=spacing_zyx)  # mm outside it
    surface = np.where(brain, depth, outside)

    def gauss(distance: np.ndarray, sigma: float) -> np.ndarray:
        return np.exp(-0.5 * (distance / sigma) ** 2)

    supratentorial = z >= tent
    posterior_fossa = (y >= TENTORIUM_Y_MIN_MM) & (np.abs(x) <= TENTORIUM_HALF_WIDTH_MM)
    tentorium = gauss(z - tent, SHEET_SIGMA_MM) * posterior_fossa
    falx_extent = supratentorial & ((depth <= FALX_DEPTH_MM) | (y >= FALX_TENTORIUM_Y_MM))
    falx = gauss(x, SHEET_SIGMA_MM) * falx_extent
    convexity = gauss(surface, SHEET_SIGMA_MM)
    superior_sagittal = gauss(x, SINUS_SIGMA_MM) * gauss(surface, SINUS_SIGMA_MM) * supratentorial
    straight = (gauss(x, SINUS_SIGMA_MM) * gauss(z - tent_midline - SINUS_SIGMA_MM, SINUS_SIGMA_MM)
                * (y >= FALX_TENTORIUM_Y_MM))
    transverse = (gauss(z - tent, SINUS_SIGMA_MM) * gauss(surface, SINUS_SIGMA_MM)
                  * (y >= TRANSVERSE_Y_MIN_MM) * (np.abs(x) >= TRANSVERSE_MIN_X_MM))
    sheets = SHEET_WEIGHT * np.maximum.reduce([tentorium, falx, convexity])
    sinuses = np.maximum.reduce([superior_sagittal, straight, transverse])
    weight = np.maximum(sheets, sinuses) * (outside <= REACH_OUTSIDE_MM)  # outside is 0 in the brain
    out = sitk.GetImageFromArray(np.clip(weight, 0.0, 1.0).astype(np.float32))
    out.CopyInformation(t1)
    return out


def native_dural_map(image: sitk.Image, transform: sitk.Transform, template_name: str = "icbm2009c") -> sitk.Image:
    """:func:`dural_map` resampled onto ``image``'s grid, ``transform`` being the preprocessing transform
    (template → native points, as :func:`~AnomalySegLib.preprocessing.pipeline.preprocess_image` finds it)."""
    return sitk.Resample(dural_map(template_name), image, transform.GetInverse(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def _coordinate(image: sitk.Image, axis: int) -> np.ndarray:
    """Physical coordinate ``axis`` (0 = x, 1 = y, 2 = z; LPS mm) of an axis-aligned image's voxels, as an
    array broadcastable to ``[Z, Y, X]``.

    Raises:
        ValueError: the image's direction is not diagonal (a template always is).
    """
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.allclose(np.abs(direction), np.eye(3)):
        raise ValueError("the template grid must be axis-aligned")
    count = image.GetSize()[axis]
    values = image.GetOrigin()[axis] + direction[axis, axis] * image.GetSpacing()[axis] * np.arange(count)
    shape = [1, 1, 1]
    shape[2 - axis] = count
    return values.reshape(shape).astype(np.float32)


__all__ = ["dural_map", "native_dural_map", "tentorium_coefficients"]
