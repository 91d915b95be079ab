"""The files ``segment`` writes per case, written atomically, never overwritten silently.

Per case ``<id>`` in the output folder::

    <id>_recon.nii.gz          pseudo-healthy reconstruction (input's grid and intensity units)
    <id>_anomaly_map.nii.gz    anomaly score, float32 (input's grid)
    <id>_anomaly_mask.nii.gz   thresholded anomaly, uint8 0/1 (input's grid)
    <id>_anomaly.seg.nrrd      the mask as a Slicer segmentation (name, colour, terminology)
    <id>_qc.png                axial/coronal/sagittal views through the largest finding, findings numbered,
                               the scored region outlined, the domain warnings printed
    <id>_findings.csv          one row per finding, largest first (reporting.findings.FINDINGS_COLUMNS)
    <id>_result.json           the case's row of the results table and the settings it was made with;
                               written last, it marks the case done
    <id>_model_space/          with --save-intermediate: model-space image, mask, x̂, x̃, ŷ, AS, transform
    .<id>_writing.json         exists only while the case is being written (a killed run leaves it)

File names: :mod:`AnomalySegLib.output_names`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.errors import AnomalySegError, OutputExistsError
from AnomalySegLib.io.atomic import atomic_folder, atomic_output, atomic_write_text, temporary_siblings
from AnomalySegLib.io.segmentation_io import write_segmentation
from AnomalySegLib.io.volume_io import write_volume
from AnomalySegLib.output_names import MODEL_SPACE_FOLDER, RESULT_FILE, ROLES, WRITING_MARKER, case_file
from AnomalySegLib.pipeline import SegmentationResult
from AnomalySegLib.preprocessing.restore import model_image
from AnomalySegLib.reporting.findings import findings_csv
from AnomalySegLib.reporting.qc_figure import render_qc_figure, save_png

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseOutputs:
    """Where one case's outputs go, and what an earlier run left there.

    A case's outputs are written between a *writing marker* (written first) and its result file
    (written last, then the marker is removed). So a re-run can tell a finished case (result file
    and every output), a case a killed run left unfinished (marker, no result file: its outputs
    are replaced) and files of somebody else (neither: never touched without ``--overwrite``).
    """

    folder: Path
    case_id: str

    def path(self, role: str) -> Path:
        return case_file(self.folder, self.case_id, role)

    @property
    def files(self) -> dict[str, Path]:
        return {role: self.path(role) for role in ROLES}

    @property
    def result_json(self) -> Path:
        return self.folder / RESULT_FILE.format(self.case_id)

    @property
    def writing_marker(self) -> Path:
        return self.folder / WRITING_MARKER.format(self.case_id)

    @property
    def model_space_folder(self) -> Path:
        return self.folder / MODEL_SPACE_FOLDER.format(self.case_id)

    def is_complete(self) -> bool:
        """True when an earlier run finished this case (its result file and every output exist)."""
        return self.result_json.is_file() and all(p.is_file() for p in self.files.values())

    def is_interrupted(self) -> bool:
        """True when a run was killed while writing this case (its marker exists, its result file not)."""
        return self.writing_marker.is_file() and not self.result_json.is_file()

    def previous_row(self) -> dict[str, Any]:
        """The results-table row an earlier run wrote for this case."""
        try:
            row = json.loads(self.result_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise AnomalySegError(f"{self.result_json}: cannot be read ({error}); remove it or use --overwrite") \
                from error
        if not isinstance(row, dict):
            raise AnomalySegError(f"{self.result_json}: is not a result record; remove it or use --overwrite")
        return row

    def check_free(self, overwrite: bool) -> None:
        """Refuse up front (before any work) if an output exists and ``overwrite`` is false."""
        if overwrite:
            return
        for path in [*self.files.values(), self.result_json, self.model_space_folder]:
            if path.exists():
                raise OutputExistsError(path)

    def discard_interrupted(self) -> list[Path]:
        """Remove what a killed run left of this case (outputs, temporary files, marker); returns them.

        Only for an :meth:`is_interrupted` case: the marker proves the files are this engine's.
        """
        if not self.is_interrupted():
            raise ValueError(f"{self.case_id}: not an interrupted case")
        targets = [*self.files.values(), self.result_json, self.model_space_folder]
        leftovers = [path for path in targets if path.exists()]
        leftovers += [temp for path in targets for temp in temporary_siblings(path)]
        for path in leftovers:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        self.writing_marker.unlink()
        return leftovers

    def begin_writing(self, settings: dict[str, Any]) -> None:
        """Mark the case as being written (before its first output); an old result file is removed."""
        atomic_write_text(self.writing_marker, json.dumps({"settings": settings}, indent=2), overwrite=True)
        self.result_json.unlink(missing_ok=True)


def write_case_outputs(result: SegmentationResult, outputs: CaseOutputs, overwrite: bool = False,
                       save_intermediate: bool = False, roles: Collection[str] = ROLES) -> dict[str, Path]:
    """Write the outputs ``roles`` of one case (not yet its result row: see :func:`mark_complete`).

    ``roles`` other than all of them re-write a case after a new threshold (mask, segmentation,
    QC picture). Returns role → path of every output of the case.
    """
    outputs.folder.mkdir(parents=True, exist_ok=True)
    volumes = {"recon": result.reconstruction, "anomaly_map": result.anomaly_map, "anomaly_mask": result.anomaly_mask}
    for role, image in volumes.items():
        if role in roles:
            write_volume(image, outputs.path(role), overwrite)
    if "segmentation" in roles:
        write_segmentation(result.anomaly_mask, outputs.path("segmentation"), overwrite=overwrite)
    if "qc" in roles:
        figure = render_qc_figure(result.image, result.reconstruction, result.anomaly_map, result.anomaly_mask,
                                  result.findings.largest_center_index, title=_qc_title(outputs.case_id, result),
                                  threshold=result.threshold, warnings=result.info.qc_warnings,
                                  findings=result.findings.table, scored_region=result.scored_region)
        with atomic_output(outputs.path("qc"), overwrite) as temp_png:
            save_png(figure, temp_png)
    if "findings" in roles:
        atomic_write_text(outputs.path("findings"), findings_csv(result.findings), overwrite)
    if save_intermediate:
        _write_model_space(result, outputs.model_space_folder, overwrite)
    return outputs.files


def mark_complete(outputs: CaseOutputs, row: dict[str, Any], overwrite: bool = False) -> None:
    """Write the case's result row, last: a re-run skips cases that have it (and all their outputs)."""
    atomic_write_text(outputs.result_json, json.dumps(row, indent=2, allow_nan=False), overwrite)
    outputs.writing_marker.unlink(missing_ok=True)


def _qc_title(case_id: str, result: SegmentationResult) -> str:
    findings = result.findings
    title = (f"{case_id}: {findings.volume_ml:.1f} ml in {findings.components} finding(s), "
             f"threshold {result.threshold:.3f} ({result.threshold_source})")
    fraction = result.info.scored_brain_fraction
    if fraction is not None:
        title += f"\nscored: {100 * fraction:.0f} % of the brain (inside the dashed box); the rest was not looked at"
    return title


def _write_model_space(result: SegmentationResult, folder: Path, overwrite: bool) -> None:
    """Model-space volumes of the case (96×96×50 by default), written as a whole folder atomically."""
    if result.model_space is None:
        raise ValueError("this result has no model-space volumes (re-thresholded from saved files)")
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
    with atomic_folder(folder, overwrite) as staging:
        for name, array in arrays.items():
            image = array if isinstance(array, sitk.Image) else model_image(np.asarray(array, np.float32), grid)
            write_volume(image, staging / f"{name}.nii.gz")
        sitk.WriteTransform(case.transform, str(staging / "transform.tfm"))
