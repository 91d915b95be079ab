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

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk
import torch

from AnomalySegLib import __version__
from AnomalySegLib.bundle import ModelBundle, load_bundle
from AnomalySegLib.device import describe
from AnomalySegLib.errors import AnomalySegError, ModelBundleError
from AnomalySegLib.io.volume_io import read_volume
from AnomalySegLib.preprocessing.pipeline import PreprocessedCase, preprocess_image
from AnomalySegLib.preprocessing.restore import restore_to_native
from AnomalySegLib.preprocessing.spec import PreprocessingSpec, SpecError
from AnomalySegLib.reporting.findings import Findings, summarize_findings
from AnomalySegLib.resources import resources_dir
from AnomalySegLib.scoring.anomaly_score import binarize
from AnomalySegLib.scoring.volume import AnomalyScorer, VolumeScores, score_halving_on_oom

DEFAULT_MODEL_NAME = "default"
THRESHOLD_PRESETS = ("val", "fpr1", "fpr5", "fpr10")

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
        anomaly_mask: uint8 0/1, ``anomaly_map > threshold`` (then the bundle's optional post-processing).
        threshold: the threshold applied; ``threshold_source`` says where it came from.
        thresholds: the model's preset thresholds (``"val"``, ``"fpr1"``, ...), for re-thresholding.
        findings: volume (ml), components, scores of the mask.
        model_space: the model-space case and scores (for ``--save-intermediate`` and evaluation).
        info: provenance: model, device, preprocessing info (mask source, registration), timings (s).
    """

    image: sitk.Image
    reconstruction: sitk.Image
    anomaly_map: sitk.Image
    anomaly_mask: sitk.Image
    threshold: float
    threshold_source: str
    thresholds: dict[str, float]
    findings: Findings
    model_space: tuple[PreprocessedCase, VolumeScores]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedCase:
    """A case read and preprocessed, waiting for the networks: the native ``image``, the model-space
    ``case`` and the seconds spent so far per stage."""

    image: sitk.Image
    case: PreprocessedCase
    timings: dict[str, float]


def default_model_path() -> Path:
    """The bundled default model folder, ``Resources/Models/default``."""
    return resources_dir() / "Models" / DEFAULT_MODEL_NAME


class AnomalySegmenter:
    """A loaded model, ready to segment any number of cases.

    Args:
        model: a bundle folder, a loaded :class:`ModelBundle`, or ``None`` for the bundled default.
        device: ``"auto"`` (CUDA → MPS → CPU), ``"cuda"``, ``"mps"``, ``"cpu"`` or a torch device string.
        precision: ``"auto"`` (bf16/fp16 autocast on GPU, fp32 on CPU), ``"fp32"``, ``"bf16"``, ``"fp16"``.
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
            self.spec = PreprocessingSpec.from_dict(self.bundle.description.get("preprocessing", {}))
        except SpecError as error:
            raise ModelBundleError(where, f"invalid preprocessing section ({error})") from error
        try:
            self.scorer = AnomalyScorer.from_bundle(self.bundle, device=device, precision=precision)
        except ValueError as error:  # an unavailable device
            raise AnomalySegError(str(error)) from error
        self.seed = seed
        self.thresholds = _preset_thresholds(self.bundle)
        self.chunk_size: int | None = None  # slices per network pass; halved after an out-of-memory error

    @property
    def device(self) -> torch.device:
        return self.scorer.device

    @property
    def model_name(self) -> str:
        provenance = self.bundle.description.get("provenance", {})
        return str(self.bundle.description.get("name") or provenance.get("name")
                   or (self.bundle.path.name if self.bundle.path else "unsaved"))

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
        prepared.timings = {"load": load_seconds, **prepared.timings}
        return prepared

    def prepare(self, image: sitk.Image, mask: sitk.Image | None = None, *, image_path: str | Path | None = None,
                mask_path: str | Path | None = None, progress: ProgressCallback | None = None) -> PreparedCase:
        """Preprocess one native volume into model space (CPU work only; a batch overlaps it with the GPU).

        Raises:
            InputError: the image or mask is unusable (names the file and the problem).
        """
        start = time.perf_counter()
        _report(progress, "preprocess", 0.0, "registration to the template, bias correction")
        case = preprocess_image(image, mask, self.spec, image_path=image_path, mask_path=mask_path)
        _report(progress, "preprocess", 1.0, f"brain mask from {case.info['mask_source']}")
        return PreparedCase(image, case, {"preprocess": time.perf_counter() - start})

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
        image, case, timings = prepared.image, prepared.case, dict(prepared.timings)
        model_image, model_mask, _ = case.arrays()
        scores = self._score(model_image, model_mask, progress)
        timings["reconstruct"] = scores.timings_s["reconstruction"]
        timings["segment"] = scores.timings_s.get("segmentation_network", 0.0)
        timings["score"] = scores.timings_s["scoring"]

        start = time.perf_counter()
        _report(progress, "restore", 0.0, "back to the input's grid")
        grid = self.spec.grid
        low, high = case.info["intensity_range"]
        recon_native_units = np.where(scores.mask, scores.reconstruction * (high - low) + low, 0.0)
        reconstruction = restore_to_native(recon_native_units, image, case.transform, "continuous", grid)
        anomaly_map = restore_to_native(scores.anomaly_score, image, case.transform, "continuous", grid)
        mask_array = binarize(sitk.GetArrayViewFromImage(anomaly_map), threshold_value, self.scorer.config)
        anomaly_mask = sitk.GetImageFromArray(mask_array.astype(np.uint8))
        anomaly_mask.CopyInformation(image)
        findings = summarize_findings(anomaly_mask, anomaly_map)
        timings["restore"] = time.perf_counter() - start
        _report(progress, "restore", 1.0, f"{findings.volume_ml:.2f} ml in {findings.components} finding(s)")

        info = {
            "engine_version": __version__,
            "model": self.model_name,
            "model_path": str(self.bundle.path) if self.bundle.path else None,
            "device": str(self.device),
            "device_name": describe(self.device),
            "seed": self.seed,
            "preprocessing": case.info,
            "timings_s": timings,
        }
        return SegmentationResult(image, reconstruction, anomaly_map, anomaly_mask, threshold_value, threshold_source,
                                  dict(self.thresholds), findings, (case, scores), info)

    def _score(self, image: np.ndarray, mask: np.ndarray, progress: ProgressCallback | None) -> VolumeScores:
        """Score in model space; on a GPU out-of-memory error retry with half as many slices per pass."""

        def on_pass(done: int, total: int) -> None:
            _report(progress, "reconstruct", done / total, f"network pass {done}/{total}")

        scores, self.chunk_size = score_halving_on_oom(self.scorer, image, mask, seed=self.seed,
                                                       chunk_size=self.chunk_size, progress=on_pass)
        return scores


def _load_model(model: str | Path | None) -> ModelBundle:
    path = Path(model) if model is not None else default_model_path()
    if model is None and not path.is_dir():
        raise ModelBundleError(path, "the bundled default model is missing; pass --model BUNDLE")
    return load_bundle(path)


def _preset_thresholds(bundle: ModelBundle) -> dict[str, float]:
    """The calibrated thresholds of the bundle's "scoring" section, by preset name."""
    stored = bundle.description.get("scoring", {}).get("thresholds", {})
    return {name: float(value) for name, value in stored.items() if name in THRESHOLD_PRESETS}


def _report(progress: ProgressCallback | None, stage: str, fraction: float, message: str) -> None:
    if progress is not None:
        progress(stage, fraction, message)
