"""One run of ``anomalyseg segment`` on a volume node: export, run, import (MRML only, no Qt).

:class:`SegmentationRun` writes the input (and brain mask) to a work folder, starts the engine
through an :class:`InferenceProcess` and, when it has finished, imports the case's results with
:mod:`SceneGlue`. The module's logic drives it from a Qt timer (GUI) or waits for it (console,
batch); tests drive it under ``slicer-core``.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import slicer

from AnomalySegLib.progress import ProgressEvent
from AnomalySegModuleLib import SceneGlue
from AnomalySegModuleLib.Findings import FindingRow, readFindingsCsv
from AnomalySegModuleLib.InferenceProcess import InferenceProcess, segmentCommand
from AnomalySegModuleLib.Results import ResultFiles


def caseIdFor(nodeName: str) -> str:
    """A file-name-safe case id from a node name (the engine names its outputs after the input file)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeName).strip("._") or "input"


#: File type of the temporary copies of the input and mask: NRRD written uncompressed (as
#: SlicerMONAIAuto3DSeg does), since compressing a file read once seconds later only costs time.
EXPORT_SUFFIX = ".nrrd"


def exportVolume(volumeNode: "slicer.vtkMRMLVolumeNode", path: Path) -> None:
    """Write a volume node (scalar or label map) to ``path``, uncompressed, in its physical geometry
    (RAS → file LPS).

    Raises:
        RuntimeError: the file could not be written.
    """
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(volumeNode) or not path.is_file():
        raise RuntimeError(f"{path}: could not write {volumeNode.GetName()}")


def exportBrainMask(maskNode: "slicer.vtkMRMLNode", inputVolume: "slicer.vtkMRMLScalarVolumeNode",
                    path: Path) -> None:
    """Write a brain mask given as a volume, or as a segmentation (its visible segments, on the input's grid)."""
    if not maskNode.IsA("vtkMRMLSegmentationNode"):
        exportVolume(maskNode, path)
        return
    scene = inputVolume.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "AnomalySeg brain mask")
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(
                maskNode, labelmap, inputVolume):
            raise RuntimeError(f"{maskNode.GetName()}: could not export the segmentation as a brain mask")
        exportVolume(labelmap, path)
    finally:
        scene.RemoveNode(labelmap)


class SegmentationRun:
    """Run the engine once on ``inputVolume`` and import its results next to it.

    Args:
        inputVolume: the scan.
        workFolder: an empty folder for the exported inputs (and the outputs when ``outputFolder``
            is ``None``); it is removed by :meth:`finish`.
        python: the interpreter running the engine (``PythonSlicer`` inside Slicer).
        volumesLogic, segmentationsLogic: the scene's Volumes and Segmentations module logics.
        brainMask, model, device, threshold: passed to ``anomalyseg segment`` (``threshold``: a
            preset name of the model or a number).
        importReconstruction, showIn3D: import options (see :func:`SceneGlue.importResults`).
        outputFolder: keep the engine's files here instead of in the work folder.
        onProgress, onLog: called (from :meth:`poll`/:meth:`wait`) with each event and log line.
        processFactory: makes the process runner (default :class:`InferenceProcess`).
    """

    def __init__(self, inputVolume: "slicer.vtkMRMLScalarVolumeNode", workFolder: Path, python: str,
                 volumesLogic, segmentationsLogic, brainMask=None, model: str | None = None,
                 device: str = "auto", threshold: str = "val", importReconstruction: bool = True,
                 showIn3D: bool = False, outputFolder: Path | None = None,
                 onProgress: Callable[[ProgressEvent], None] | None = None,
                 onLog: Callable[[str], None] | None = None,
                 processFactory: Callable[..., InferenceProcess] = InferenceProcess) -> None:
        if inputVolume is None or inputVolume.GetImageData() is None:
            raise ValueError("the input volume has no image data")
        self.inputVolume = inputVolume
        self.workFolder = Path(workFolder)
        self.resultsFolder = Path(outputFolder) if outputFolder else self.workFolder / "output"
        self.caseId = caseIdFor(inputVolume.GetName())
        self.volumesLogic = volumesLogic
        self.segmentationsLogic = segmentationsLogic
        self.importReconstruction = importReconstruction
        self.showIn3D = showIn3D
        self.onProgress = onProgress
        self.onLog = onLog
        self.threshold = threshold
        self.caseDone: ProgressEvent | None = None
        self.device = ""
        self.precision = ""
        self.errors: list[str] = []
        self.logTail: list[str] = []

        inputPath = self.workFolder / f"{self.caseId}{EXPORT_SUFFIX}"
        exportVolume(inputVolume, inputPath)
        maskPath = None
        if brainMask is not None:
            maskPath = self.workFolder / f"brain_mask{EXPORT_SUFFIX}"
            exportBrainMask(brainMask, inputVolume, maskPath)
        self.command = segmentCommand(python, inputPath, self.resultsFolder, model=model, maskPath=maskPath,
                                      device=device, threshold=threshold)
        self.process = processFactory(onEvent=self._onEvent, onLog=self._onLog)

    def start(self, environment: dict[str, str] | None = None) -> None:
        logging.info("AnomalySeg: running %s", " ".join(self.command))
        self.process.start(self.command, environment=environment)

    @property
    def running(self) -> bool:
        return self.process.running

    def poll(self) -> bool:
        """Deliver pending progress and log; ``True`` while the engine may still report."""
        return self.process.poll()

    def wait(self) -> None:
        self.process.wait()

    def cancel(self) -> None:
        self.process.cancel()

    def finish(self) -> tuple[SceneGlue.ImportedResults | None, str]:
        """After the process ended: import the results, or ``(None, message)``; removes the work folder.

        The message is empty when the run was cancelled, else the engine's last error (or the end
        of its log). What is imported is what the engine reports in its ``case_done`` event: the
        files under ``outputs``, the ``threshold`` it applied, its ``qc_warnings`` and the findings
        table at ``findings_csv``. A case the engine reports as ``skipped`` (finished earlier in the
        output folder) is imported only if it was made at the threshold asked for now.
        """
        try:
            if self.process.cancelled:
                return None, ""
            if self.process.returncode != 0 or self.caseDone is None:
                detail = self.errors[-1:] or self.logTail[-3:] or [f"exit status {self.process.returncode}"]
                return None, "; ".join(detail)
            fields = self.caseDone.fields
            reused = bool(fields.get("skipped"))
            if reused:
                mismatch = self._thresholdMismatch(fields)
                if mismatch:
                    return None, mismatch
                self._log(f"AnomalySeg: {self.resultsFolder} holds this case finished earlier with the same "
                          "settings; its results are loaded without a new run")
            threshold = fields.get("threshold")
            outputs = fields.get("outputs")
            caseId = self.caseDone.case or self.caseId
            files = (ResultFiles.fromOutputs(outputs, self.resultsFolder, caseId) if isinstance(outputs, dict)
                     else ResultFiles.inFolder(self.resultsFolder, caseId))
            results = SceneGlue.importResults(
                files, self.inputVolume, self.volumesLogic, self.segmentationsLogic,
                threshold=None if threshold is None else float(threshold),
                importReconstruction=self.importReconstruction, showIn3D=self.showIn3D)
            results.qcWarnings = [str(warning) for warning in fields.get("qc_warnings") or []]
            results.cleanUp = SceneGlue.cleanUpOf(fields.get("operating_point"))
            results.findingsTable = self._engineFindings(fields.get("findings_csv"))
            results.device, results.precision, results.reused = self.device, self.precision, reused
            return results, ""
        finally:
            shutil.rmtree(self.workFolder, ignore_errors=True)

    def _thresholdMismatch(self, fields: dict) -> str:
        """Why a reused case does not answer this request (its threshold differs), or ``""``."""
        requested = str(self.threshold)
        try:
            differs = not math.isclose(float(requested), float(fields.get("threshold")), rel_tol=1e-6)
        except (TypeError, ValueError):  # a preset name: compare with the preset the case was made with
            source = fields.get("threshold_source")
            differs = source is not None and str(source) != requested
        if not differs:
            return ""
        made = fields.get("threshold_source") or fields.get("threshold")
        return (f"{self.resultsFolder} holds this case made earlier at threshold {made}, not {requested}; "
                "choose another output folder (or none) to run it again")

    def _engineFindings(self, findingsCsv: object) -> list[FindingRow]:
        if not findingsCsv:
            return []
        try:
            return readFindingsCsv(findingsCsv)
        except (OSError, ValueError) as error:  # the images are still worth loading; say what is missing
            self._log(f"AnomalySeg: the findings table could not be read: {error}")
            return []

    def _onEvent(self, event: ProgressEvent) -> None:
        if event.event == "start":
            self.device = str(event.fields.get("device") or "")
            self.precision = str(event.fields.get("precision") or "")
            if self.device:
                self._log(f"AnomalySeg: the engine runs on {self.device}"
                          + (f" in {self.precision}" if self.precision else ""))
        elif event.event == "case_done":
            self.caseDone = event
            for warning in event.fields.get("qc_warnings") or []:
                self._log(f"AnomalySeg warning ({event.case}): {warning}")
        elif event.event == "error":
            self.errors.append(event.message)
        if self.onProgress:
            self.onProgress(event)

    def _log(self, line: str) -> None:
        logging.info(line)
        if self.onLog:
            self.onLog(line)

    def _onLog(self, line: str) -> None:
        self.logTail = (self.logTail + [line])[-20:]
        if self.onLog:
            self.onLog(line)
