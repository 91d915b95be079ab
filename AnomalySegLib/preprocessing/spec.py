"""Every parameter of the preprocessing, as one versioned, validated, JSON-serialisable value.

A :class:`PreprocessingSpec` is stored inside every model bundle and every preprocessed case, so that
inference repeats exactly what training saw. Defaults follow the paper (Behrendt et al., MIDL 2024,
docs/design.md, "Preprocessing") except for the atlas: the paper registers to SRI24; we use the MNI ICBM152 2009c
symmetric template because it ships a skull-on T1, a skull-stripped T1 and a brain mask (needed to
derive a brain mask for skull-on input without HD-BET), under a permissive licence. SRI24 is offered
too (``template="sri24"``, with its own grid: :func:`with_template`).

The **model grid** is explicit (size, spacing, origin, direction in template physical space, ITK/LPS
coordinates). The default is the paper's: a 192×192×160 crop at 1 mm centred on the template brain's
bounding box, downsampled ×2 and with 15 axial slices dropped at the top and at the bottom, i.e.
96×96×50 voxels of 2 mm. Its direction is the identity (LPS), so SimpleITK arrays ``[Z, Y, X]`` give
axial slices ``array[z]``, ``z`` running inferior → superior, each shown by ``imshow`` in radiological
convention (anterior up, patient left on the right).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from AnomalySegLib.choices import BRAIN_MASK_METHODS, TEMPLATES
from AnomalySegLib.errors import InputError
from AnomalySegLib.spec_io import JsonSpec, SpecError

SPEC_VERSION = 1

IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

#: Centre (mm, LPS, template physical space) of each template's brain-mask bounding box: the default
#: model grid of a template is the paper's crop around it (:func:`with_template`).
#: Testing/test_preprocessing_steps.py derives them from the templates.
TEMPLATE_BRAIN_CENTRES_MM = {"icbm2009c": (0.0, 17.0, 5.0), "sri24": (119.0, -110.0, 72.5)}
#: A grid whose centre lies farther than this from its template's brain centre is refused: it was
#: made for another template (the templates' physical spaces differ by ~200 mm).
GRID_CENTRE_TOLERANCE_MM = 50.0


@dataclass(frozen=True)
class ModelGrid:
    """The voxel grid of model space, in the template's physical space (mm, LPS).

    ``size`` and ``spacing`` are in SimpleITK order ``(x, y, z)``; arrays on this grid are ``[z, y, x]``.
    ``direction`` is the row-major 3×3 direction cosine matrix.
    """

    size: tuple[int, int, int] = (96, 96, 50)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    # `from_crop(TEMPLATE_BRAIN_CENTRES_MM["icbm2009c"])`; Testing/test_preprocessing_steps.py checks it
    origin: tuple[float, float, float] = (-95.0, -78.0, -44.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION

    def __post_init__(self) -> None:
        _check(len(self.size) == 3 and all(int(s) == s and s > 0 for s in self.size), "grid.size",
               "must be three positive integers")
        _check(len(self.spacing) == 3 and all(s > 0 for s in self.spacing), "grid.spacing",
               "must be three positive numbers (mm)")
        _check(len(self.origin) == 3 and all(math.isfinite(o) for o in self.origin), "grid.origin",
               "must be three finite numbers (mm)")
        _check(len(self.direction) == 9 and _is_rotation(self.direction), "grid.direction",
               "must be a 3×3 orthonormal matrix (9 numbers, row-major) with determinant +1")

    @property
    def centre(self) -> tuple[float, float, float]:
        """Physical centre of the grid (mm)."""
        half = [(n - 1) / 2 * d for n, d in zip(self.size, self.spacing)]
        rows = [self.direction[0:3], self.direction[3:6], self.direction[6:9]]
        return tuple(o + sum(r[k] * half[k] for k in range(3)) for o, r in zip(self.origin, rows))

    @property
    def array_shape(self) -> tuple[int, int, int]:
        """Shape of numpy arrays on this grid, ``(z, y, x)``."""
        return (self.size[2], self.size[1], self.size[0])

    @classmethod
    def from_crop(
        cls,
        centre: tuple[float, float, float],
        crop_size: tuple[int, int, int] = (192, 192, 160),
        crop_spacing: float = 1.0,
        downsample: int = 2,
        drop_slices: tuple[int, int] = (15, 15),
    ) -> "ModelGrid":
        """The grid the paper's recipe gives: crop around ``centre`` → downsample → drop axial slices.

        Args:
            centre: physical centre of the crop (mm, LPS), e.g. the template brain's bounding-box centre.
            crop_size: crop in voxels ``(x, y, z)`` at ``crop_spacing`` mm, axis-aligned (identity direction).
            downsample: integer factor; each model voxel is the centre of a ``downsample``³ block.
            drop_slices: ``(bottom, top)`` axial slices removed after downsampling.
        """
        spacing = crop_spacing * downsample
        size = [n // downsample for n in crop_size]
        # centre of the first downsampled voxel = mean of the first block's 1 mm voxel centres
        first = [c - (n - 1) / 2 * crop_spacing + (downsample - 1) / 2 * crop_spacing
                 for c, n in zip(centre, crop_size)]
        first[2] += drop_slices[0] * spacing
        size[2] -= drop_slices[0] + drop_slices[1]
        return cls(size=tuple(size), spacing=(spacing,) * 3, origin=tuple(first),
                   direction=IDENTITY_DIRECTION)


@dataclass(frozen=True)
class BrainMaskSpec:
    """How the brain mask is found when none is given.

    An input counts as already skull-stripped when at least ``stripped_min_background_fraction`` of its
    voxels hold exactly the image minimum (stripping sets everything outside the brain to one value)
    and the largest connected region above the minimum has a brain-like volume in
    ``stripped_volume_ml`` (adult brain incl. CSF: ~1000–2000 ml; a head with skull: 3000–10000 ml).
    Otherwise ``method`` decides: ``"template"`` maps the template's brain mask through the affine
    registration; ``"learned"`` extracts the brain with a learned model
    (:mod:`AnomalySegLib.preprocessing.brain_extraction`, deepbet; optional extra ``[brain]``).
    """

    stripped_min_background_fraction: float = 0.3
    stripped_volume_ml: tuple[float, float] = (800.0, 2400.0)
    method: str = "template"

    def __post_init__(self) -> None:
        _check(0 < self.stripped_min_background_fraction < 1, "brain_mask.stripped_min_background_fraction",
               "must lie in (0, 1)")
        low, high = self.stripped_volume_ml
        _check(0 < low < high, "brain_mask.stripped_volume_ml", "must be (low, high) with 0 < low < high")
        _check(self.method in BRAIN_MASK_METHODS, "brain_mask.method", f"must be one of {BRAIN_MASK_METHODS}")




def with_brain_mask_method(spec: "PreprocessingSpec", method: str) -> "PreprocessingSpec":
    """``spec`` with the brain mask of skull-on input found by ``method`` (see :class:`BrainMaskSpec`)."""
    return dataclasses.replace(spec, brain_mask=dataclasses.replace(spec.brain_mask, method=method))


@dataclass(frozen=True)
class BiasFieldSpec:
    """N4 bias-field correction: estimated on a shrunk image, applied at full resolution."""

    enabled: bool = True
    shrink_factor: int = 6
    iterations_per_level: tuple[int, ...] = (50, 50, 30)
    convergence_threshold: float = 0.001

    def __post_init__(self) -> None:
        _check(self.shrink_factor >= 1, "bias_field.shrink_factor", "must be ≥ 1")
        _check(len(self.iterations_per_level) >= 1 and all(i >= 1 for i in self.iterations_per_level),
               "bias_field.iterations_per_level", "must be one or more positive integers")
        _check(self.convergence_threshold > 0, "bias_field.convergence_threshold", "must be > 0")


@dataclass(frozen=True)
class RegistrationSpec:
    """Affine registration of the input to the template: Mattes mutual information, a similarity
    stage over ``similarity_shrink_factors`` then a full affine stage over ``affine_shrink_factors``
    (shrink factors relative to the working image; Gaussian smoothing per level in mm). Each level is
    an image of its own (see :mod:`~.registration`); ``sampling_fraction`` of its voxels are drawn at
    random for the metric (those outside the fixed mask are dropped): 0.02 of the 2 mm template is
    about 20 000 draws. ``iterations``: the cap per level.

    ``fixed_mask_dilation_mm``: for skull-on input the metric only sees the template brain mask dilated
    by this much: brain, skull and scalp, but not the neck and face, which vary too much between
    scans. Measured on MRHead / ITK-KMeans / MRBrainTumor1, the correlation with the template after
    registration was 0.20 / 0.21 / -0.05 with 15 mm, 0.54 / 0.31 / 0.18 with 20 mm and
    0.61 / 0.63 / 0.17 with 30 mm: the skull's edges are what mutual information locks onto.
    """

    histogram_bins: int = 32
    sampling_fraction: float = 0.02
    similarity_shrink_factors: tuple[int, ...] = (4, 2)
    similarity_smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0)
    affine_shrink_factors: tuple[int, ...] = (2,)
    affine_smoothing_sigmas_mm: tuple[float, ...] = (1.0,)
    iterations: int = 100
    fixed_mask_dilation_mm: float = 30.0
    random_seed: int = 42

    def __post_init__(self) -> None:
        _check(self.histogram_bins >= 8, "registration.histogram_bins", "must be ≥ 8")
        _check(0 < self.sampling_fraction <= 1, "registration.sampling_fraction", "must lie in (0, 1]")
        for stage in ("similarity", "affine"):
            shrink = getattr(self, f"{stage}_shrink_factors")
            sigmas = getattr(self, f"{stage}_smoothing_sigmas_mm")
            _check(len(shrink) == len(sigmas) >= 1, f"registration.{stage}_shrink_factors",
                   "needs one smoothing sigma per level (and at least one level)")
            _check(all(int(s) == s and s >= 1 for s in shrink), f"registration.{stage}_shrink_factors",
                   "must be integers ≥ 1")
            _check(all(s >= 0 for s in sigmas), f"registration.{stage}_smoothing_sigmas_mm", "must be ≥ 0")
        _check(self.iterations >= 1, "registration.iterations", "must be ≥ 1")
        _check(self.fixed_mask_dilation_mm >= 0, "registration.fixed_mask_dilation_mm", "must be ≥ 0")


@dataclass(frozen=True)
class PreprocessingSpec(JsonSpec):
    """All parameters of :func:`AnomalySegLib.preprocessing.pipeline.preprocess_image`.

    Paper defaults (docs/design.md, "The method"): 1 mm working resolution, N4, affine registration to an atlas,
    curvature-flow denoising (time step 0.125, 3 iterations), 1st–99th percentile rescaling to [0, 1]
    inside the brain mask, 96×96×50 grid of 2 mm. ``antialias``: Gaussian smoothing of the native
    image before sampling the coarser model grid (σ = (model spacing − native spacing) / 2 per axis,
    the rule of scikit-image's ``rescale``), standing in for the paper's 1 mm crop + ×2 downsampling.
    """

    SPEC_NAME = "preprocessing spec"

    version: int = SPEC_VERSION
    template: str = "icbm2009c"
    grid: ModelGrid = field(default_factory=ModelGrid)
    working_spacing_mm: float = 1.0
    brain_mask: BrainMaskSpec = field(default_factory=BrainMaskSpec)
    bias_field: BiasFieldSpec = field(default_factory=BiasFieldSpec)
    registration: RegistrationSpec = field(default_factory=RegistrationSpec)
    antialias: bool = True
    denoise_time_step: float = 0.125
    denoise_iterations: int = 3
    percentiles: tuple[float, float] = (1.0, 99.0)

    def __post_init__(self) -> None:
        _check(self.version == SPEC_VERSION, "version",
               f"is {self.version!r}; this engine reads preprocessing spec version {SPEC_VERSION}")
        _check(self.template in TEMPLATES, "template", f"must be one of {TEMPLATES}")
        offset = math.dist(self.grid.centre, TEMPLATE_BRAIN_CENTRES_MM[self.template])
        _check(offset <= GRID_CENTRE_TOLERANCE_MM, "grid",
               f"is centred {offset:.0f} mm from the brain of template {self.template!r}: it belongs to another "
               f"template (a spec for another template needs that template's grid: with_template)")
        _check(self.working_spacing_mm > 0, "working_spacing_mm", "must be > 0")
        _check(self.denoise_time_step > 0, "denoise_time_step", "must be > 0")
        _check(self.denoise_iterations >= 0, "denoise_iterations", "must be ≥ 0")
        low, high = self.percentiles
        _check(0 <= low < high <= 100, "percentiles", "must be (low, high) with 0 ≤ low < high ≤ 100")


def with_template(spec: PreprocessingSpec, name: str) -> PreprocessingSpec:
    """``spec`` registering to template ``name``, on that template's default grid (the paper's crop
    around its brain, :data:`TEMPLATE_BRAIN_CENTRES_MM`)."""
    if name not in TEMPLATE_BRAIN_CENTRES_MM:
        raise SpecError(f"preprocessing spec field template must be one of {TEMPLATES}, not {name!r}")
    return dataclasses.replace(spec, template=name, grid=ModelGrid.from_crop(TEMPLATE_BRAIN_CENTRES_MM[name]))


def _check(condition: bool, name: str, problem: str) -> None:
    if not condition:
        raise SpecError(f"preprocessing spec field {name} {problem}")


def _is_rotation(direction: tuple[float, ...]) -> bool:
    m = [direction[0:3], direction[3:6], direction[6:9]]
    for i in range(3):
        for j in range(3):
            dot = sum(m[i][k] * m[j][k] for k in range(3))
            if abs(dot - (1.0 if i == j else 0.0)) > 1e-6:
                return False
    det = (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
           - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
           + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))
    return abs(det - 1.0) < 1e-6


#: The paper's grid (the default): 96×96×50 voxels of 2 mm; the top 30 mm of the cortex and the lower
#: cerebellum lie outside it. The configuration of ``evaluate --protocol paper``.
PAPER_GRID = ModelGrid()
#: The whole brain at the paper's resolution: the paper's crop made 168 mm tall and no slice dropped,
#: 96×96×84 voxels of 2 mm, z from −78 to +88 mm: the template brain (z −72 … +82 mm, vertex to the
#: bottom of the cerebellum) with 6 mm to spare above and below. The default model's grid.
WHOLE_BRAIN_GRID = ModelGrid.from_crop(TEMPLATE_BRAIN_CENTRES_MM["icbm2009c"], crop_size=(192, 192, 168),
                                      drop_slices=(0, 0))
#: The named grids (``--grid`` of the scripts that build training data).
MODEL_GRIDS = {"paper": PAPER_GRID, "whole_brain": WHOLE_BRAIN_GRID}


def read_spec(path: str | Path) -> PreprocessingSpec:
    """A spec from a JSON file holding a spec, or a document with a ``"spec"`` entry
    (a case folder's ``preprocessing.json``)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"cannot be read as a JSON preprocessing spec ({error})") from error
    if isinstance(document, dict) and isinstance(document.get("spec"), dict):
        document = document["spec"]
    try:
        return PreprocessingSpec.from_dict(document)
    except SpecError as error:
        raise InputError(path, str(error)) from error

