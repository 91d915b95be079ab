"""Simulated MRI acquisitions of a native volume, before preprocessing (issue #13, "train on the variety a
clinic produces").

A source scan (any orientation, spacing and size) is re-acquired as a new axial scan:

1. contrast (on the source grid): a gamma curve ``x' = r·(x/r)^γ`` (``r`` = the source's 99th intensity
   percentile) and, optionally, a *contrast-enhanced T1 look*: thin bright structures (the white top-hat of
   the image with a ball of :data:`ENHANCE_RADIUS_MM`: vessels, dura, choroid plexus are thin and already
   brighter than their surroundings in a T1) are brightened by ``strength × top-hat × w``, where the weight
   ``w`` is largest next to the brain-mask rim (dura, cortical veins; e-folding :data:`RIM_SCALE_MM`) and
   near the mid-sagittal plane (falx, sinuses, the choroid plexus of the lateral ventricles; e-folding
   :data:`MIDLINE_SCALE_MM`). Without a brain mask ``w = 1`` (every thin bright structure enhances). Given a
   *dural map* (the dura and venous sinuses, :mod:`.dura`, mapped onto the source), the thick structures that
   are grey without contrast (falx, tentorium, sinuses) are also raised, by ``strength ×``
   :data:`DURA_LEVEL` ``× r ×`` the map. This is an approximation of the look, not a model of gadolinium
   kinetics;
2. patient position (one interpolation, together with step 3's regridding): a rotation (degrees about the
   L, P and S axes through the volume centre), a scaling per axis and an elastic deformation (a cubic
   B-spline with :data:`ELASTIC_MESH` control cells per axis, displacements ~ N(0, elastic_mm²));
3. a fine axis-aligned (LPS) grid of :func:`fine_spacing_mm` covering the source's physical extent;
4. a smooth multiplicative bias field ``exp(L)``: ``L`` a random sum of Legendre polynomials of total
   degree ≤ 3 in the normalised physical coordinates, scaled so that ``max |L| = bias_log_amplitude``;
5. the point-spread function: in plane a Gaussian of FWHM = the in-plane spacing (less what the fine grid
   already blurs), through plane the *slice profile*: a box of width ``slice_thickness_mm`` with
   Gaussian-rounded edges (σ = :data:`PROFILE_EDGE_FRACTION` × thickness); then sampling on the slab grid
   (in-plane spacing × slice thickness, contiguous slabs);
6. Rician noise: ``|x + n₁ + i·n₂|`` with ``n₁, n₂ ~ N(0, σ²)``, ``σ = noise_fraction × r``.

Labels (a 0/1 anomaly mask on the source grid) go through the same geometry and point-spread function
as a partial-volume fraction, and are ≥ 0.5 on the output grid. Each step draws from its own random
stream (spawned from ``seed``), so turning one step off does not change the others: the same parameters
and seed give the same volume, bit for bit.

Every function is SimpleITK/scipy on arrays ``[Z, Y, X]``; the ranges of :class:`AcquisitionRanges` are the
ones issue #13 asks for (slices 1–7 mm, in-plane 0.8–1.5 mm).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk
from numpy.polynomial import legendre
from scipy import ndimage, special

#: White top-hat ball radius (mm) for the contrast-enhanced look: structures thinner than ~2× this enhance.
ENHANCE_RADIUS_MM = 2.0
#: e-folding distance (mm) of the enhancement weight from the brain-mask rim (dura, cortical veins).
RIM_SCALE_MM = 5.0
#: e-folding distance (mm) of the enhancement weight from the mid-sagittal plane (falx, sinuses, choroid plexus).
MIDLINE_SCALE_MM = 15.0
#: What the dura and sinuses gain at enhancement strength 1 and dural-map weight 1, as a fraction of the
#: reference level ``r``: strengths 0.5–1.5 lift a sinus by 0.25–0.75 r (grey → brighter than white matter).
DURA_LEVEL = 0.5
#: The slice profile's edge: σ of the Gaussian rounding the box, as a fraction of the slice thickness.
PROFILE_EDGE_FRACTION = 0.1
#: B-spline control cells per axis of the elastic deformation.
ELASTIC_MESH = 4
#: Spacing (mm) at which the elastic deformation is sampled into a displacement field.
ELASTIC_FIELD_SPACING_MM = 4.0
#: Finest spacing (mm) of the intermediate grid: finer than any simulated voxel, coarse enough for memory.
MAX_FINE_SPACING_MM = 1.0
#: Intensity percentile that defines the reference level ``r`` of the gamma curve and of the noise.
REFERENCE_PERCENTILE = 99.0
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class AcquisitionParams:
    """One simulated acquisition (units in the names; the identity acquisition has thickness = in-plane = 1).

    Attributes:
        slice_thickness_mm: slab thickness and slab spacing along S (contiguous axial slabs).
        inplane_spacing_mm: voxel size along L and P.
        noise_fraction: Rician σ as a fraction of the source's 99th intensity percentile (0 = no noise).
        bias_log_amplitude: max |log| of the multiplicative bias field (0.2 → factors 0.82–1.22; 0 = none).
        gamma: exponent of the contrast curve (1 = unchanged).
        enhancement: strength of the contrast-enhanced look (0 = none; 1 doubles the top-hat at the rim).
        rotation_deg: rotation about the L, P, S axes, degrees.
        scale: scaling along L, P, S (1 = unchanged).
        elastic_mm: standard deviation of the B-spline control-point displacements, mm (0 = none).
    """

    slice_thickness_mm: float = 1.0
    inplane_spacing_mm: float = 1.0
    noise_fraction: float = 0.0
    bias_log_amplitude: float = 0.0
    gamma: float = 1.0
    enhancement: float = 0.0
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    elastic_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.slice_thickness_mm <= 0 or self.inplane_spacing_mm <= 0:
            raise ValueError("slice thickness and in-plane spacing must be positive (mm)")
        if self.noise_fraction < 0 or self.bias_log_amplitude < 0 or self.elastic_mm < 0 or self.enhancement < 0:
            raise ValueError("noise, bias, elastic and enhancement amplitudes must be ≥ 0")
        if self.gamma <= 0 or min(self.scale) <= 0:
            raise ValueError("gamma and scales must be positive")

    def to_dict(self) -> dict:
        """JSON-compatible form (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class AcquisitionRanges:
    """Ranges that :func:`sample_acquisition` draws uniformly from (issue #13's clinic variety).

    ``enhancement_probability`` of the draws get a contrast-enhanced look of strength in ``enhancement``.
    """

    slice_thickness_mm: tuple[float, float] = (1.0, 7.0)
    inplane_spacing_mm: tuple[float, float] = (0.8, 1.5)
    noise_fraction: tuple[float, float] = (0.0, 0.05)
    bias_log_amplitude: tuple[float, float] = (0.0, 0.3)
    gamma: tuple[float, float] = (0.75, 1.35)
    enhancement_probability: float = 0.3
    enhancement: tuple[float, float] = (0.5, 1.5)
    rotation_deg: float = 8.0
    scale: tuple[float, float] = (0.93, 1.07)
    elastic_mm: tuple[float, float] = (0.0, 2.0)


@dataclass
class Acquisition:
    """A simulated scan: ``image`` float32 on the slab grid (LPS-aligned), ``labels`` uint8 0/1 on the same
    grid (or ``None``), and the parameters and seed that made it."""

    image: sitk.Image
    labels: sitk.Image | None
    params: AcquisitionParams
    seed: int
    info: dict = field(default_factory=dict)


def clinical_reacquisition(slice_thickness_mm: float, seed: int = 0) -> AcquisitionParams:
    """The documented "clinical re-acquisition" preset used for MRBrainTumor1/2 in the benchmarks.

    Axial slabs of ``slice_thickness_mm`` (5 and 6.5 mm in the benchmark) with the slice profile, in-plane
    spacing drawn in 0.8–1.0 mm, Rician noise of 3 % of the 99th percentile, a bias field of max |log| 0.2
    (a different field than the one the source scan had); no change of position or contrast, so that the
    ground truth only goes through the regridding.
    """
    rng = np.random.default_rng([seed, 7919])
    return AcquisitionParams(slice_thickness_mm=slice_thickness_mm,
                             inplane_spacing_mm=round(float(rng.uniform(0.8, 1.0)), 3),
                             noise_fraction=0.03, bias_log_amplitude=0.2)


def sample_acquisition(seed: int, ranges: AcquisitionRanges = AcquisitionRanges()) -> AcquisitionParams:
    """Random parameters within ``ranges`` (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 104729])

    def draw(bounds: tuple[float, float]) -> float:
        return round(float(rng.uniform(*bounds)), 4)

    enhanced = rng.uniform() < ranges.enhancement_probability
    return AcquisitionParams(
        slice_thickness_mm=draw(ranges.slice_thickness_mm),
        inplane_spacing_mm=draw(ranges.inplane_spacing_mm),
        noise_fraction=draw(ranges.noise_fraction),
        bias_log_amplitude=draw(ranges.bias_log_amplitude),
        gamma=draw(ranges.gamma),
        enhancement=draw(ranges.enhancement) if enhanced else 0.0,
        rotation_deg=tuple(draw((-ranges.rotation_deg, ranges.rotation_deg)) for _ in range(3)),
        scale=tuple(draw(ranges.scale) for _ in range(3)),
        elastic_mm=draw(ranges.elastic_mm),
    )


def simulate_acquisition(image: sitk.Image, params: AcquisitionParams, seed: int = 0,
                         labels: sitk.Image | None = None, brain_mask: sitk.Image | None = None,
                         dura: sitk.Image | None = None) -> Acquisition:
    """Re-acquire ``image`` with ``params`` (see the module docstring for the steps).

    Args:
        image: the source scan (3D scalar, any orientation).
        params: the acquisition to simulate.
        seed: seeds every random step (same inputs and seed → identical output).
        labels: optional anomaly mask on ``image``'s grid (> 0 = anomaly), carried through the geometry.
        brain_mask: optional brain mask on ``image``'s grid (> 0 = brain); only the contrast-enhanced look
            uses it (weights near the rim and the midline).
        dura: optional dural map on ``image``'s grid (0–1, :func:`.dura.native_dural_map`); only the
            contrast-enhanced look uses it (the falx, tentorium and sinuses enhance).

    Returns:
        the simulated scan on an LPS-aligned grid of spacing (in-plane, in-plane, thickness) covering the
        source's physical extent.
    """
    for name, other in (("labels", labels), ("brain_mask", brain_mask), ("dura", dura)):
        if other is not None and (other.GetSize() != image.GetSize()
                                  or not np.allclose(other.GetSpacing(), image.GetSpacing(), atol=1e-4)):
            raise ValueError(f"{name} grid {other.GetSize()} differs from the image grid {image.GetSize()}")
    streams = np.random.SeedSequence(seed).spawn(4)
    geometry_rng, bias_rng, noise_rng, _ = (np.random.default_rng(s) for s in streams)
    source = sitk.GetArrayFromImage(image).astype(np.float32)
    reference = float(np.percentile(source, REFERENCE_PERCENTILE))
    source = _contrast(source, image, params, reference, brain_mask, dura)
    contrasted = _like(source, image)

    fine = fine_grid(image)
    transform = position_transform(image, params, geometry_rng)
    moved = sitk.GetArrayFromImage(_resample(contrasted, fine, transform)).astype(np.float32)
    field = bias_field(fine, params.bias_log_amplitude, bias_rng)
    moved *= field
    target = slab_grid(image, params)
    acquired = _acquire(moved, fine, target, params)
    if params.noise_fraction > 0:
        acquired = add_rician_noise(acquired, params.noise_fraction * reference, noise_rng)
    out = _like(acquired.astype(np.float32), target)

    carried = None
    if labels is not None:
        binary = _like((sitk.GetArrayFromImage(labels) > 0).astype(np.float32), image)
        fraction = sitk.GetArrayFromImage(_resample(binary, fine, transform)).astype(np.float32)
        carried = sitk.Cast(_like((_acquire(fraction, fine, target, params) >= 0.5).astype(np.uint8), target),
                            sitk.sitkUInt8)
    info = {"reference_intensity": reference, "noise_sigma": params.noise_fraction * reference,
            "fine_spacing_mm": fine.GetSpacing()[0]}
    return Acquisition(out, carried, params, seed, info)


def fine_spacing_mm(image: sitk.Image) -> float:
    """Spacing of the intermediate isotropic grid: the source's finest spacing, at most 1 mm."""
    return min(MAX_FINE_SPACING_MM, min(image.GetSpacing()))


def fine_grid(image: sitk.Image) -> sitk.Image:
    """An empty LPS-aligned isotropic grid of :func:`fine_spacing_mm` covering ``image``'s physical extent."""
    spacing = fine_spacing_mm(image)
    return _grid(image, (spacing, spacing, spacing))


def slab_grid(image: sitk.Image, params: AcquisitionParams) -> sitk.Image:
    """The output grid: LPS-aligned, spacing (in-plane, in-plane, slice thickness), over ``image``'s extent."""
    s = params.inplane_spacing_mm
    return _grid(image, (s, s, params.slice_thickness_mm))


def position_transform(image: sitk.Image, params: AcquisitionParams, rng: np.random.Generator) -> sitk.Transform:
    """Resampling transform (output point → source point) for the rotation, scaling and elastic deformation."""
    center = _physical_center(image)
    rx, ry, rz = (math.radians(a) for a in params.rotation_deg)
    euler = sitk.Euler3DTransform(center, rx, ry, rz)
    matrix = np.asarray(euler.GetMatrix()).reshape(3, 3) @ np.diag(params.scale)
    affine = sitk.AffineTransform(matrix.ravel().tolist(), (0.0, 0.0, 0.0), center)
    composite = sitk.CompositeTransform(affine)
    if params.elastic_mm > 0:
        spline = sitk.BSplineTransformInitializer(image, [ELASTIC_MESH] * 3, 3)
        count = len(spline.GetParameters())
        spline.SetParameters(rng.normal(0.0, params.elastic_mm, count).tolist())
        composite.AddTransform(_dense(spline, image))
    return composite


def _dense(spline: sitk.BSplineTransform, image: sitk.Image) -> sitk.DisplacementFieldTransform:
    """The B-spline sampled every :data:`ELASTIC_FIELD_SPACING_MM` as a displacement field: resampling
    through the B-spline directly costs ~30× more, and the field is smooth on that scale (cells of ~50 mm)."""
    coarse = _grid(image, (ELASTIC_FIELD_SPACING_MM,) * 3)
    to_field = sitk.TransformToDisplacementFieldFilter()
    to_field.SetReferenceImage(coarse)
    to_field.SetOutputPixelType(sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(to_field.Execute(spline))


def bias_field(grid: sitk.Image, log_amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field ``[Z, Y, X]`` on ``grid`` with ``max |log field| = log_amplitude``.

    ``log field = Σ c_ijk P_i(x) P_j(y) P_k(z)`` over Legendre polynomials of total degree 1–3, the
    coordinates normalised to [-1, 1] over the grid, ``c ~ N(0, 1)``, then scaled to the amplitude.
    """
    size = grid.GetSize()
    if log_amplitude == 0:
        return np.ones(size[::-1], dtype=np.float32)
    axes = [np.linspace(-1.0, 1.0, n) for n in size]  # x, y, z
    degree = 3
    coefficients = np.zeros((degree + 1,) * 3)
    for i in range(degree + 1):
        for j in range(degree + 1 - i):
            for k in range(degree + 1 - i - j):
                if i + j + k > 0:
                    coefficients[i, j, k] = rng.normal()
    log_field = legendre.leggrid3d(axes[2], axes[1], axes[0], coefficients.transpose(2, 1, 0))  # [Z, Y, X]
    log_field *= log_amplitude / max(float(np.abs(log_field).max()), 1e-12)
    return np.exp(log_field).astype(np.float32)


def slice_profile(thickness_mm: float, step_mm: float) -> np.ndarray:
    """Normalised through-plane weights sampled every ``step_mm``: a box of width ``thickness_mm`` with
    Gaussian-rounded edges (σ = :data:`PROFILE_EDGE_FRACTION` × thickness), centred, summing to 1."""
    sigma = PROFILE_EDGE_FRACTION * thickness_mm
    half = thickness_mm / 2.0
    reach = int(math.ceil((half + 3.0 * sigma) / step_mm))
    u = np.arange(-reach, reach + 1) * step_mm
    weights = 0.5 * (special.erf((half - u) / (math.sqrt(2.0) * sigma))
                     + special.erf((half + u) / (math.sqrt(2.0) * sigma)))
    return weights / weights.sum()


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of σ per channel: ``|x + n₁ + i·n₂|``."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imaginary = rng.normal(0.0, sigma, image.shape)
    return np.hypot(real, imaginary).astype(np.float32)


def _contrast(source: np.ndarray, image: sitk.Image, params: AcquisitionParams, reference: float,
              brain_mask: sitk.Image | None, dura: sitk.Image | None) -> np.ndarray:
    if params.gamma != 1.0 and reference > 0:
        source = (reference * np.power(np.clip(source, 0.0, None) / reference, params.gamma)).astype(np.float32)
    if params.enhancement > 0:
        source = source + params.enhancement * _enhancement_map(source, image, brain_mask)
        if dura is not None:
            source = source + (params.enhancement * DURA_LEVEL * reference
                               * sitk.GetArrayFromImage(dura).astype(np.float32))
    return source


def _enhancement_map(source: np.ndarray, image: sitk.Image, brain_mask: sitk.Image | None) -> np.ndarray:
    """Top-hat × weight: what a contrast agent would add (see the module docstring), ``[Z, Y, X]``."""
    spacing_zyx = np.asarray(image.GetSpacing()[::-1])
    radius = np.maximum(1, np.round(ENHANCE_RADIUS_MM / spacing_zyx)).astype(int)
    zz, yy, xx = np.ogrid[-radius[0]:radius[0] + 1, -radius[1]:radius[1] + 1, -radius[2]:radius[2] + 1]
    ball = (zz / radius[0]) ** 2 + (yy / radius[1]) ** 2 + (xx / radius[2]) ** 2 <= 1.0
    tophat = ndimage.white_tophat(source, footprint=ball)
    if brain_mask is None:
        return tophat
    mask = sitk.GetArrayFromImage(brain_mask) > 0
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_zyx)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)
    rim_weight = np.exp(-np.where(mask, inside, outside) / RIM_SCALE_MM)
    lateral = _physical_coordinate(image, axis=0)  # L-R coordinate of each voxel, mm
    midline = float(lateral[mask].mean()) if mask.any() else float(lateral.mean())
    midline_weight = np.exp(-np.abs(lateral - midline) / MIDLINE_SCALE_MM) * (outside < 2 * RIM_SCALE_MM)
    return tophat * np.clip(rim_weight + midline_weight, 0.0, 1.0)


def _acquire(volume: np.ndarray, fine: sitk.Image, target: sitk.Image, params: AcquisitionParams) -> np.ndarray:
    """Point-spread function on the fine grid, then sampling on ``target``; ``[Z, Y, X]`` float32."""
    step = fine.GetSpacing()[0]
    sigma_mm = math.sqrt(max(params.inplane_spacing_mm ** 2 - step ** 2, 0.0)) / _FWHM_PER_SIGMA
    blurred = ndimage.gaussian_filter(volume, sigma=(0.0, sigma_mm / step, sigma_mm / step))
    blurred = ndimage.convolve1d(blurred, slice_profile(params.slice_thickness_mm, step), axis=0, mode="nearest")
    return sitk.GetArrayFromImage(_resample(_like(blurred.astype(np.float32), fine), target,
                                            sitk.Transform())).astype(np.float32)


def _grid(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    low, high = _physical_bounds(image)
    size = [max(1, int(math.floor((hi - lo) / s))) for lo, hi, s in zip(low, high, spacing)]
    # centre the grid in the extent: the left-over (< one voxel) split on both sides
    origin = [lo + ((hi - lo) - n * s) / 2.0 + s / 2.0 for lo, hi, n, s in zip(low, high, size, spacing)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetOrigin(origin)
    return grid


def _physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    size = image.GetSize()
    corners = [image.TransformContinuousIndexToPhysicalPoint([c - 0.5 if b == 0 else n - 0.5
                                                              for c, b, n in zip((0, 0, 0), bits, size)])
               for bits in np.ndindex(2, 2, 2)]
    corners = np.asarray(corners)
    return corners.min(axis=0), corners.max(axis=0)


def _physical_center(image: sitk.Image) -> tuple[float, float, float]:
    low, high = _physical_bounds(image)
    return tuple(float(v) for v in (low + high) / 2.0)


def _physical_coordinate(image: sitk.Image, axis: int) -> np.ndarray:
    """Physical coordinate ``axis`` (0 = L, 1 = P, 2 = S) of every voxel, ``[Z, Y, X]`` float32, mm."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    step = direction[axis] * np.asarray(image.GetSpacing())  # mm per index step along i, j, k
    size = image.GetSize()
    k, j, i = np.ogrid[:size[2], :size[1], :size[0]]
    return (image.GetOrigin()[axis] + step[0] * i + step[1] * j + step[2] * k).astype(np.float32)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _resample(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    return sitk.Resample(image, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


__all__ = ["Acquisition", "AcquisitionParams", "AcquisitionRanges", "add_rician_noise", "bias_field",
           "clinical_reacquisition", "fine_grid", "position_transform", "sample_acquisition",
           "simulate_acquisition", "slab_grid", "slice_profile"]
