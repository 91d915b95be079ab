"""The files ``segment`` writes per case, written atomically, never overwritten silently.

Per case ``<id>`` in the output folder::

    <id>_recon.nii.gz          pseudo-healthy reconstruction (input's grid and intensity units)
    <id>_anomaly_map.nii.gz    anomaly score, float32 (input's grid)
    <id>_anomaly_mask.nii.gz   thresholded anomaly, uint8 0/1 (input's grid)
    <id>_anomaly.seg.nrrd      the mask as a Slicer segmentation (name, colour, terminology)
    <id>_qc.png                axial/coronal/sagittal views through the largest finding, findings numbered,
                               the scored region outlined, the domain warnings printed
    <id>_findings.csv          one row per finding, largest first (reporting.findings.FINDINGS_COLUMNS)
    <id>_result.json           the case's row of the results table; written last, it marks the case done
    <id>_model_space/          with --save-intermediate: model-space image, mask, x̂, x̃, ŷ, AS, transform
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.errors import OutputExistsError
from AnomalySegLib.io.atomic import atomic_output, atomic_write_text
from AnomalySegLib.io.segmentation_io import write_segmentation
from AnomalySegLib.io.volume_io import write_volume
from AnomalySegLib.pipeline import SegmentationResult
from AnomalySegLib.preprocessing.restore import model_image
from AnomalySegLib.reporting.findings import findings_csv
from AnomalySegLib.reporting.qc_figure import render_qc_figure, save_png

ROLES = ("recon", "anomaly_map", "anomaly_mask", "segmentation", "qc", "findings")
_FILE_NAMES = {
    "recon": "{}_recon.nii.gz",
    "anomaly_map": "{}_anomaly_map.nii.gz",
    "anomaly_mask": "{}_anomaly_mask.nii.gz",
    "segmentation": "{}_anomaly.seg.nrrd",
    "qc": "{}_qc.png",
    "findings": "{}_findings.csv",
}


@dataclass(frozen=True)
class CaseOutputs:
    """Where one case's outputs go."""

    folder: Path
    case_id: str

    def path(self, role: str) -> Path:
        return self.folder / _FILE_NAMES[role].format(self.case_id)

    @property
    def files(self) -> dict[str, Path]:
        return {role: self.path(role) for role in ROLES}

    @property
    def result_json(self) -> Path:
        return self.folder / f"{self.case_id}_result.json"

    @property
    def model_space_folder(self) -> Path:
        return self.folder / f"{self.case_id}_model_space"

    def is_complete(self) -> bool:
        """True when an earlier run finished this case (its result file and every output exist)."""
        return self.result_json.is_file() and all(p.is_file() for p in self.files.values())

    def previous_row(self) -> dict[str, Any]:
        """The results-table row an earlier run wrote for this case."""
        return json.loads(self.result_json.read_text(encoding="utf-8"))

    def check_free(self, overwrite: bool) -> None:
        """Refuse up front (before any work) if an output exists and ``overwrite`` is false."""
        if overwrite:
            return
        for path in [*self.files.values(), self.result_json, self.model_space_folder]:
            if path.exists():
                raise OutputExistsError(path)


def write_case_outputs(result: SegmentationResult, outputs: CaseOutputs, overwrite: bool = False,
                       save_intermediate: bool = False) -> dict[str, Path]:
    """Write every output of one case (not yet its result row: see :func:`mark_complete`); returns role → path."""
    outputs.folder.mkdir(parents=True, exist_ok=True)
    write_volume(result.reconstruction, outputs.path("recon"), overwrite)
    write_volume(result.anomaly_map, outputs.path("anomaly_map"), overwrite)
    write_volume(result.anomaly_mask, outputs.path("anomaly_mask"), overwrite)
    write_segmentation(result.anomaly_mask, outputs.path("segmentation"), overwrite=overwrite)
    figure = render_qc_figure(result.image, result.reconstruction, result.anomaly_map, result.anomaly_mask,
                              result.findings.largest_center_index, title=_qc_title(outputs.case_id, result),
                              threshold=result.threshold, warnings=result.info.get("qc_warnings", ()),
                              findings=result.findings.table, scored_region=result.scored_region)
    with atomic_output(outputs.path("qc"), overwrite) as temp_png:
        save_png(figure, temp_png)
    atomic_write_text(outputs.path("findings"), findings_csv(result.findings), overwrite)
    if save_intermediate:
        _write_model_space(result, outputs.model_space_folder, overwrite)
    return outputs.files


def mark_complete(outputs: CaseOutputs, row: dict[str, Any], overwrite: bool = False) -> None:
    """Write the case's result row, last: a re-run skips cases that have it (and all their outputs)."""
    atomic_write_text(outputs.result_json, json.dumps(row, indent=2, allow_nan=False), overwrite)


def _qc_title(case_id: str, result: SegmentationResult) -> str:
    findings = result.findings
    title = (f"{case_id}: {findings.volume_ml:.1f} ml in {findings.components} finding(s), "
             f"threshold {result.threshold:.3f} ({result.threshold_source})")
    fraction = result.info.get("scored_brain_fraction")
    if fraction is not None:
        title += f"\nscored: {100 * fraction:.0f} % of the brain (inside the dashed box); the rest was not looked at"
    return title


def _write_model_space(result: SegmentationResult, folder: Path, overwrite: bool) -> None:
    """Model-space volumes of the case (96×96×50 by default), written as a whole folder atomically."""
    if folder.exists() and not overwrite:
        raise OutputExistsError(folder)
    case, scores = result.model_space
    grid = case.spec.grid
    arrays = {
        "image": case.image,
        "mask": case.mask,
        "reconstruction": scores.reconstruction,
        "reconstruction_term": scores.reconstruction_term,
        "anomaly_score": scores.anomaly_score,
    }
    if scores.segmentation_probability is not None:
        arrays["segmentation_probability"] = scores.segmentation_probability
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, array in arrays.items():
            image = array if isinstance(array, sitk.Image) else model_image(np.asarray(array, np.float32), grid)
            write_volume(image, staging / f"{name}.nii.gz")
        sitk.WriteTransform(case.transform, str(staging / "transform.tfm"))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
