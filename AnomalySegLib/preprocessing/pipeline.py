"""The preprocessing pipeline: a native brain MRI → model space (docs/design.md, "Preprocessing").

Steps (each a tested function in its own module):

1. validate the input (and the mask, if given);
2. working image: reorient to LPS, resample to ``spec.working_spacing_mm`` isotropic;
3. brain-mask source: the given mask, else the input itself if it is already skull-stripped, else the
   template's mask through the registration, cut to the scanned field of view (or, with
   ``spec.brain_mask.method == "learned"``, deepbet);
4. N4 bias field fitted on the shrunk working image (inside the brain mask, or the head found on the
   shrunk image for skull-on input), applied to the native image through its log field;
5. affine registration of the bias-corrected working image to the template (skull-stripped template
   and masked input when a brain mask is known; skull-on template with a dilated brain mask otherwise);
6. one interpolation of the corrected native image into the model grid (anti-aliased), and of the
   mask/labels (linear, ≥ 0.5);
7. curvature-flow denoising, then 1–99 percentile rescaling to [0, 1] inside the mask (0 outside).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from AnomalySegLib import __version__
from AnomalySegLib.errors import InputError
from AnomalySegLib.io.validation import validate_mask, validate_volume
from AnomalySegLib.io.volume_io import read_volume
from AnomalySegLib.preprocessing.bias_field import estimate_bias_field
from AnomalySegLib.preprocessing.brain_mask import skull_stripped_mask
from AnomalySegLib.preprocessing.intensity import denoise_curvature_flow, percentile_range, rescale_to_unit
from AnomalySegLib.preprocessing.model_space import resample_to_model
from AnomalySegLib.preprocessing.orientation import reorient_to_lps, resample_isotropic
from AnomalySegLib.preprocessing.registration import register_affine, template_pyramid
from AnomalySegLib.preprocessing.spec import ModelGrid, PreprocessingSpec
from AnomalySegLib.preprocessing.template import load_template

log = logging.getLogger(__name__)

MASK_GIVEN = "given"
MASK_SKULL_STRIPPED_INPUT = "skull_stripped_input"
MASK_TEMPLATE = "template"
MASK_LEARNED = "learned"


@dataclass
class PreprocessedCase:
    """One case in model space (all images on ``spec.grid``; arrays ``[Z, Y, X]``).

    Attributes:
        image: float32 in [0, 1], 0 outside the brain mask.
        mask: uint8 brain mask (0/1).
        labels: uint8 anomaly ground truth (0/1), or ``None``.
        transform: affine mapping template (model-space) points to native points; resamples native →
            model, its inverse model → native (see :func:`~.restore.restore_to_native`).
        spec: the spec used.
        info: what each step did: mask source, registration metric and start, native geometry,
            per-step wall times (s), engine version.
    """

    image: sitk.Image
    mask: sitk.Image
    labels: sitk.Image | None
    transform: sitk.AffineTransform
    spec: PreprocessingSpec
    info: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(image float32, mask bool, labels bool | None)`` as ``[Z, Y, X]`` arrays."""
        image = sitk.GetArrayFromImage(self.image).astype(np.float32)
        mask = sitk.GetArrayFromImage(self.mask) > 0
        labels = None if self.labels is None else sitk.GetArrayFromImage(self.labels) > 0
        return image, mask, labels


def preprocess_image(image: sitk.Image, mask: sitk.Image | None = None,
                     spec: PreprocessingSpec | None = None, labels: sitk.Image | None = None,
                     label_values: Sequence[int] | None = None, *, image_path: str | Path | None = None,
                     mask_path: str | Path | None = None,
                     labels_path: str | Path | None = None) -> PreprocessedCase:
    """Bring one native T1 image (with optional brain mask and anomaly labels) into model space.

    Args:
        image: the native scan (any 3D scalar image, any orientation/spacing).
        mask: optional brain mask on ``image``'s grid (> 0 = brain).
        spec: preprocessing parameters (default: the paper's).
        labels: optional label map on ``image``'s grid; voxels whose value is in ``label_values``
            (default: any value > 0) are the anomaly.
        image_path, mask_path, labels_path: the files they came from, named in error messages.

    Raises:
        InputError: the image, mask or labels are unusable (message names the file and the problem).
    """
    spec = spec or PreprocessingSpec()
    timings: dict[str, float] = {}
    validate_volume(image, image_path)
    if mask is not None:
        validate_mask(mask, image, mask_path, image_path)
    anomaly = None
    if labels is not None:
        anomaly = _anomaly_mask(labels, image, label_values, labels_path, image_path)
    template = load_template(spec.template)
    native = sitk.Cast(image, sitk.sitkFloat32)

    with _timed(timings, "working_image"):
        working = resample_isotropic(reorient_to_lps(native), spec.working_spacing_mm)
        given_mask = None
        if mask is not None:
            given_mask = resample_isotropic(reorient_to_lps(sitk.Cast(mask > 0, sitk.sitkFloat32)),
                                            spec.working_spacing_mm) >= 0.5
            given_mask = sitk.Cast(given_mask, sitk.sitkUInt8)

    with _timed(timings, "brain_mask"):
        if given_mask is not None:
            mask_source, working_brain = MASK_GIVEN, given_mask
        else:
            working_brain = skull_stripped_mask(working, spec.brain_mask)
            mask_source = MASK_TEMPLATE if working_brain is None else MASK_SKULL_STRIPPED_INPUT
            if working_brain is None and spec.brain_mask.method == MASK_LEARNED:
                working_brain, mask_source = _learned_mask(working, image_path), MASK_LEARNED

    with _timed(timings, "bias_field"):
        if spec.bias_field.enabled:
            bias = estimate_bias_field(working, working_brain, spec.bias_field)  # None: the head
            working = bias.correct(working)
            native = bias.correct(native)

    with _timed(timings, "registration"):
        skull_on = working_brain is None
        moving = working if skull_on else sitk.Mask(working, working_brain)
        fixed = template_pyramid(spec.template, skull_on, spec.registration)
        registration = register_affine(fixed, moving, spec.registration)
        transform = registration.transform

    with _timed(timings, "resample_to_model"):
        model = resample_to_model(native, transform, spec.grid, smooth=spec.antialias)
        if mask is not None:
            model_mask = resample_to_model(mask, transform, spec.grid, binary=True)
        elif working_brain is not None:
            model_mask = resample_to_model(working_brain, transform, spec.grid, binary=True)
        else:  # model space is template space: the template's mask needs no transform
            model_mask = resample_to_model(template.mask, sitk.Transform(), spec.grid, binary=True)
            # the template's brain reaches where the scan may not have looked: score only what was scanned
            model_mask = sitk.And(model_mask, field_of_view(native, transform, spec.grid))
        model_labels = None if anomaly is None else resample_to_model(anomaly, transform, spec.grid, binary=True)

    with _timed(timings, "denoise"):
        model = denoise_curvature_flow(model, spec.denoise_time_step, spec.denoise_iterations)

    with _timed(timings, "rescale"):
        try:
            intensity_range = percentile_range(model, model_mask, *spec.percentiles)
        except ValueError as error:
            raise InputError(image_path, f"cannot be brought into model space: {error}") from error
        model = rescale_to_unit(model, model_mask, intensity_range)

    info = {
        "engine_version": __version__,
        "mask_source": mask_source,
        "bias_field_mask": "none (disabled)" if not spec.bias_field.enabled
        else "brain" if working_brain is not None else "head",
        "registration": {"metric": registration.metric, "iterations": list(registration.iterations),
                         "fixed": "t1_brain" if working_brain is not None else "t1"},
        "native_geometry": geometry(image),
        "intensity_range": list(intensity_range),  # native units mapped to 0 and 1 (reversible)
        "brain_voxels": int(np.count_nonzero(sitk.GetArrayViewFromImage(model_mask))),
        "anomaly_voxels": None if model_labels is None
        else int(np.count_nonzero(sitk.GetArrayViewFromImage(model_labels))),
        "timings_s": timings,
    }
    log.info("%s: preprocessed (mask from %s, registration metric %.3f) in %.1f s",
             image_path or "image", mask_source, registration.metric, sum(timings.values()))
    return PreprocessedCase(image=model, mask=model_mask, labels=model_labels, transform=transform,
                            spec=spec, info=info)


def preprocess_file(image_path: str | Path, mask_path: str | Path | None = None,
                    labels_path: str | Path | None = None, label_values: Sequence[int] | None = None,
                    spec: PreprocessingSpec | None = None) -> PreprocessedCase:
    """:func:`preprocess_image` on files (any format :func:`~AnomalySegLib.io.volume_io.read_volume` reads)."""
    image = read_volume(image_path)
    mask = None if mask_path is None else read_volume(mask_path)
    labels = None if labels_path is None else read_volume(labels_path)
    case = preprocess_image(image, mask, spec, labels, label_values, image_path=image_path,
                            mask_path=mask_path, labels_path=labels_path)
    case.info["source"] = {"image": str(image_path), "mask": None if mask_path is None else str(mask_path),
                           "labels": None if labels_path is None else str(labels_path),
                           "label_values": None if label_values is None else list(label_values)}
    return case


def _learned_mask(working: sitk.Image, image_path: str | Path | None) -> sitk.Image:
    """deepbet's brain mask of the working image; its errors name the input file."""
    from AnomalySegLib.preprocessing.brain_extraction import learned_brain_mask  # optional dependency

    try:
        return learned_brain_mask(working)
    except InputError as error:
        raise InputError(image_path, error.problem) from error


def field_of_view(native: sitk.Image, transform: sitk.Transform, grid: ModelGrid) -> sitk.Image:
    """The model-grid voxels (uint8 0/1) that lie inside ``native``'s scanned volume (its voxel grid),
    through ``transform`` (template → native), less one model voxel at the cut: those are partly empty
    after interpolation. The model grid's own border is not eroded."""
    scanned = sitk.Image(native.GetSize(), sitk.sitkUInt8) + 1
    scanned.CopyInformation(native)
    inside = resample_to_model(scanned, transform, grid, binary=True)
    return sitk.BinaryErode(inside, [1, 1, 1], sitk.sitkBall, 0, 1, True)


def geometry(image: sitk.Image) -> dict[str, list]:
    """Size, spacing, origin and direction of ``image`` as JSON-compatible lists."""
    return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()), "direction": list(image.GetDirection())}


def _anomaly_mask(labels: sitk.Image, image: sitk.Image, label_values: Sequence[int] | None,
                  labels_path: str | Path | None, image_path: str | Path | None) -> sitk.Image:
    """uint8 0/1: voxels of ``labels`` whose value is in ``label_values`` (default: > 0)."""
    validate_mask(labels, image, labels_path, image_path)
    values = sitk.GetArrayFromImage(labels)
    selected = values > 0 if not label_values else np.isin(values, list(label_values))
    if not selected.any():
        raise InputError(labels_path, f"holds no voxel with label value(s) {list(label_values or [])} "
                         f"(values present: {sorted(np.unique(values).tolist())[:10]})")
    anomaly = sitk.GetImageFromArray(selected.astype(np.uint8))
    anomaly.CopyInformation(image)
    return anomaly


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[step] = round(time.perf_counter() - start, 3)
