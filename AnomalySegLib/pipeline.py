"""The engine's one entry point: a native brain MRI → reconstruction, anomaly map and mask on its grid.

volume (+ optional brain mask) → preprocess to model space → Stage I reconstruction → Stage II
probability → anomaly score → threshold → restore to the native grid. The CLI (``segment``), batch
jobs, the Python API and the Slicer module (through the CLI in a subprocess) all call
:class:`AnomalySegmenter`; the model bundle is loaded once per segmenter, not per case.

Example::

    segmenter = AnomalySegmenter("Resources/Models/default", device="auto")
    result = segmenter.segment_file("scan.nii.gz")
    print(result.findings.volume_ml, result.threshold)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from AnomalySegLib import __version__
from AnomalySegLib.bundle import ModelBundle, load_bundle
from AnomalySegLib.case_info import CaseInfo, StageTimings
from AnomalySegLib.choices import THRESHOLD_PRESETS
from AnomalySegLib.device import describe, precision_name
from AnomalySegLib.errors import AnomalySegError, ModelBundleError
from AnomalySegLib.io.volume_io import read_volume
from AnomalySegLib.preprocessing.pipeline import PreprocessedCase, preprocess_image
from AnomalySegLib.preprocessing.restore import restore_to_native
from AnomalySegLib.preprocessing.spec import PreprocessingSpec, SpecError
from AnomalySegLib.quality.domain import DomainCheck, DomainReport
from AnomalySegLib.reporting.findings import Findings, summarize_findings
from AnomalySegLib.resources import resources_dir
from AnomalySegLib.scoring.coverage import scored_brain_fraction, scored_box_on_native
from AnomalySegLib.scoring.operating_point import (
    CleanUp,
    OperatingPoint,
    apply_operating_point,
    voxel_size_zyx,
)
from AnomalySegLib.scoring.volume import AnomalyScorer, VolumeScores, score_halving_on_oom

DEFAULT_MODEL_NAME = "default"
__all__ = ["THRESHOLD_PRESETS", "AnomalySegmenter", "SegmentationResult", "PreparedCase", "default_model_path"]

#: ``progress(stage, fraction_within_stage, message)``; stages as in :data:`AnomalySegLib.progress.SEGMENT_STAGES`.
ProgressCallback = Callable[[str, float, str], None]


@dataclass
class SegmentationResult:
    """One case's results on the input's native grid (size, spacing, origin, direction of the input).

    Attributes:
        image: the input volume as given.
        reconstruction: float32 pseudo-healthy image, in the input's intensity units (the model's
            [0, 1] range mapped back through the 1st–99th percentile rescaling, after bias correction),
            0 outside the brain.
        anomaly_map: float32 anomaly score AS (0 outside the brain; higher = more abnormal).
        anomaly_mask: uint8 0/1, the operating point applied to ``anomaly_map`` (``anomaly_map > threshold``,
            then the bundle's clean-up: :mod:`AnomalySegLib.scoring.operating_point`).
        threshold: the threshold applied; ``threshold_source`` says where it came from.
        thresholds: the model's preset thresholds (``"val"``, ``"fpr1"``, ...), for re-thresholding.
        findings: volume (ml), components, scores of the mask.
        model_space: the model-space case and scores (for ``--save-intermediate`` and evaluation);
            ``None`` for a result re-thresholded from saved files.
        info: provenance (model, device, precision, preprocessing), checks and timings;
            ``qc_warnings`` and ``domain`` come from the domain check
            (:mod:`AnomalySegLib.quality.catalogue`).
        scored_region: uint8 0/1 on the native grid, the part of the input inside the model grid's box (what
            was looked at; the QC picture outlines it); ``None`` for a result re-thresholded from saved files.
    """

    image: sitk.Image
    reconstruction: sitk.Image
    anomaly_map: sitk.Image
    anomaly_mask: sitk.Image
    threshold: float
    threshold_source: str
    thresholds: dict[str, float]
    findings: Findings
    model_space: tuple[PreprocessedCase, VolumeScores] | None
    info: CaseInfo
    scored_region: sitk.Image | None = None


@dataclass
class PreparedCase:
    """A case read and preprocessed, waiting for the networks: the native ``image``, the model-space
    ``case``, the seconds spent so far per stage and the domain check's measures and warnings."""

    image: sitk.Image
    case: PreprocessedCase
    timings: StageTimings
    domain: DomainReport = field(default_factory=DomainReport)


def default_model_path() -> Path:
    """The bundled default model folder, ``Resources/Models/default``."""
    return resources_dir() / "Models" / DEFAULT_MODEL_NAME


class AnomalySegmenter:
    """A loaded model, ready to segment any number of cases.

    Args:
        model: a bundle folder, a loaded :class:`ModelBundle`, or ``None`` for the bundled default.
        device: ``"auto"`` (CUDA → MPS → CPU), ``"cuda"``, ``"mps"``, ``"cpu"`` or a torch device string.
        precision: ``"auto"`` (see :func:`~AnomalySegLib.device.autocast_dtype`), ``"fp32"``, ``"bf16"``, ``"fp16"``.
        seed: seeds the diffusion noise; the same seed gives the same result.

    Raises:
        ModelBundleError: the bundle is missing, tampered with, incomplete or of an unknown version.
        AnomalySegError: the device asked for is not available.
    """

    def __init__(self, model: str | Path | ModelBundle | None = None, device: str = "auto",
                 precision: str = "auto", seed: int = 0) -> None:
        self.bundle = model if isinstance(model, ModelBundle) else _load_model(model)
        where = self.bundle.path or "<unsaved bundle>"
        try:
            self.spec = PreprocessingSpec.from_dict(self.bundle.section("preprocessing"))
        except SpecError as error:
            raise ModelBundleError(where, f"invalid preprocessing section ({error})") from error
        try:
            self.scorer = AnomalyScorer.from_bundle(self.bundle, device=device, precision=precision)
        except ValueError as error:  # an unavailable device
            raise AnomalySegError(str(error)) from error
        self.domain_check = DomainCheck.from_section(self.bundle.description.get("domain"), where)
        self.seed = seed
        self.thresholds = _preset_thresholds(self.bundle)
        try:
            self.clean_up = CleanUp.from_scoring(self.bundle.description.get("scoring", {}))
        except ValueError as error:
            raise ModelBundleError(where, f"invalid scoring section ({error})") from error
        self.chunk_size: int | None = None  # slices per network pass; halved after an out-of-memory error

    @property
    def device(self) -> torch.device:
        return self.scorer.device

    @property
    def precision(self) -> str:
        """The precision the networks run at: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return precision_name(self.scorer.reconstructor.autocast_dtype)

    @property
    def model_name(self) -> str:
        return self.bundle.name

    def resolve_threshold(self, request: str | float) -> tuple[float, str]:
        """The threshold for ``request``: a number, or a preset name of :data:`THRESHOLD_PRESETS`.

        Raises:
            ModelBundleError: the preset was never calibrated for this model.
        """
        if not isinstance(request, str):
            return float(request), "user"
        try:
            return float(request), "user"
        except ValueError:
            pass
        if request not in self.thresholds:
            known = ", ".join(sorted(self.thresholds)) or "none (run 'anomalyseg calibrate')"
            raise ModelBundleError(self.bundle.path or "<unsaved bundle>",
                                   f"has no calibrated threshold {request!r} (it has: {known})")
        return self.thresholds[request], request

    def prepare_file(self, image_path: str | Path, mask_path: str | Path | None = None,
                     progress: ProgressCallback | None = None) -> PreparedCase:
        """Read and preprocess one case from files (NIfTI, NRRD, MHA, DICOM folder); CPU work only."""
        start = time.perf_counter()
        _report(progress, "load", 0.0, f"reading {Path(image_path).name}")
        image = read_volume(image_path)
        mask = None if mask_path is None else read_volume(mask_path)
        _report(progress, "load", 1.0, "read")
        load_seconds = time.perf_counter() - start
        prepared = self.prepare(image, mask, image_path=image_path, mask_path=mask_path, progress=progress)
        prepared.timings.load = load_seconds
        return prepared

    def prepare(self, image: sitk.Image, mask: sitk.Image | None = None, *, image_path: str | Path | None = None,
                mask_path: str | Path | None = None, progress: ProgressCallback | None = None) -> PreparedCase:
        """Preprocess one native volume into model space (CPU work only; a batch overlaps it with the GPU).

        Raises:
            InputError: the image or mask is unusable, or refused by the domain check (names the file
                and the problem).
        """
        start = time.perf_counter()
        domain = self.domain_check.before_preprocessing(image, image_path)
        _report(progress, "preprocess", 0.0, "registration to the template, bias correction")
        case = preprocess_image(image, mask, self.spec, image_path=image_path, mask_path=mask_path)
        self.domain_check.after_preprocessing(case, domain, image_path)
        _report(progress, "preprocess", 1.0, f"brain mask from {case.info['mask_source']}")
        return PreparedCase(image, case, StageTimings(preprocess=time.perf_counter() - start), domain)

    def segment_file(self, image_path: str | Path, mask_path: str | Path | None = None,
                     threshold: str | float = "val", progress: ProgressCallback | None = None) -> SegmentationResult:
        """:meth:`segment` on files (NIfTI, NRRD, MHA, DICOM folder)."""
        resolved = self.resolve_threshold(threshold)  # an unknown preset fails before any work
        return self.finish(self.prepare_file(image_path, mask_path, progress), resolved, progress)

    def segment(self, image: sitk.Image, mask: sitk.Image | None = None, threshold: str | float = "val", *,
                image_path: str | Path | None = None, mask_path: str | Path | None = None,
                progress: ProgressCallback | None = None) -> SegmentationResult:
        """Segment one native volume (optional brain mask on its grid); results on its grid.

        Raises:
            InputError: the image or mask is unusable (names the file and the problem).
            ModelBundleError: ``threshold`` names a preset the model does not have.
        """
        resolved = self.resolve_threshold(threshold)
        prepared = self.prepare(image, mask, image_path=image_path, mask_path=mask_path, progress=progress)
        return self.finish(prepared, resolved, progress)

    def finish(self, prepared: PreparedCase, threshold: tuple[float, str],
               progress: ProgressCallback | None = None) -> SegmentationResult:
        """Networks, scoring and the way back to the native grid for a prepared case.

        ``threshold`` is ``(value, source)`` as :meth:`resolve_threshold` returns it.
        """
        threshold_value, threshold_source = threshold
        image, case, timings = prepared.image, prepared.case, dataclasses.replace(prepared.timings)
        model_image, model_mask, _ = case.arrays()
        scores = self._score(model_image, model_mask, progress)
        timings.reconstruct = scores.timings_s["reconstruction"]
        timings.segment = scores.timings_s.get("segmentation_network", 0.0)
        timings.score = scores.timings_s["scoring"]

        start = time.perf_counter()
        _report(progress, "restore", 0.0, "back to the input's grid")
        grid = self.spec.grid
        low, high = case.info["intensity_range"]
        recon_native_units = np.where(scores.mask, scores.reconstruction * (high - low) + low, 0.0)
        reconstruction = restore_to_native(recon_native_units, image, case.transform, "continuous", grid)
        anomaly_map = restore_to_native(scores.anomaly_score, image, case.transform, "continuous", grid)
        anomaly_mask, findings = self.threshold_map(anomaly_map, threshold_value)
        scored_region = scored_box_on_native(image, case.transform, grid)
        brain_fraction = scored_brain_fraction(image, case.transform, scored_region, self.spec)
        timings.restore = time.perf_counter() - start
        _report(progress, "restore", 1.0, f"{findings.volume_ml:.2f} ml in {findings.components} finding(s)")

        info = CaseInfo(
            engine_version=__version__,
            model=self.model_name,
            model_sha256=self.bundle.fingerprint(),
            model_path=str(self.bundle.path) if self.bundle.path else None,
            device=str(self.device),
            device_name=describe(self.device),
            precision=self.precision,
            seed=self.seed,
            preprocessing=case.info,
            timings=timings,
            qc_warnings=list(prepared.domain.warnings),
            domain=dict(prepared.domain.measures),
            scored_brain_fraction=brain_fraction,
            operating_point=OperatingPoint(threshold_value, threshold_source, self.clean_up).to_info(),
        )
        return SegmentationResult(image, reconstruction, anomaly_map, anomaly_mask, threshold_value, threshold_source,
                                  dict(self.thresholds), findings, (case, scores), info, scored_region)

    def threshold_map(self, anomaly_map: sitk.Image, threshold: float) -> tuple[sitk.Image, Findings]:
        """The mask (uint8 0/1, on ``anomaly_map``'s grid) and its findings for a native anomaly map.

        The one place a score map becomes a mask: :meth:`finish` and re-thresholding saved maps use it.
        """
        mask_array = apply_operating_point(sitk.GetArrayViewFromImage(anomaly_map),
                                           voxel_size_zyx(anomaly_map.GetSpacing()), threshold, self.clean_up)
        anomaly_mask = sitk.GetImageFromArray(mask_array.astype(np.uint8))
        anomaly_mask.CopyInformation(anomaly_map)
        return anomaly_mask, summarize_findings(anomaly_mask, anomaly_map)

    def _score(self, image: np.ndarray, mask: np.ndarray, progress: ProgressCallback | None) -> VolumeScores:
        """Score in model space; on a GPU out-of-memory error retry with half as many slices per pass."""

        def on_pass(done: int, total: int) -> None:
            _report(progress, "reconstruct", done / total, f"network pass {done}/{total}")

        def on_stage(stage: str) -> None:
            _report(progress, stage, 0.0, {"segment": "Stage II SegUnet", "score": "anomaly score"}[stage])

        scores, self.chunk_size = score_halving_on_oom(self.scorer, image, mask, seed=self.seed,
                                                       chunk_size=self.chunk_size, progress=on_pass,
                                                       stage_started=on_stage)
        return scores


def _load_model(model: str | Path | None) -> ModelBundle:
    path = Path(model) if model is not None else default_model_path()
    if model is None and not path.is_dir():
        raise ModelBundleError(path, "the bundled default model is missing; pass --model BUNDLE")
    return load_bundle(path)


def _preset_thresholds(bundle: ModelBundle) -> dict[str, float]:
    """The calibrated thresholds of the bundle's "scoring" section, by preset name."""
    return {name: value for name, value in bundle.thresholds.items() if name in THRESHOLD_PRESETS}


def _report(progress: ProgressCallback | None, stage: str, fraction: float, message: str) -> None:
    if progress is not None:
        progress(stage, fraction, message)
