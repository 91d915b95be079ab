"""One run of ``anomalyseg segment`` on a volume node: export, run, import (MRML only, no Qt).

:class:`SegmentationRun` writes the input (and brain mask) to a work folder, starts the engine
through an :class:`InferenceProcess` and, when it has finished, imports the case's results with
:mod:`SceneGlue`. The module's logic drives it from a Qt timer (GUI) or waits for it (console,
batch); tests drive it under ``slicer-core``.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import slicer

from AnomalySegLib.progress import ProgressEvent
from AnomalySegModuleLib import SceneGlue
from AnomalySegModuleLib.InferenceProcess import InferenceProcess, segmentCommand
from AnomalySegModuleLib.Results import ResultFiles


def caseIdFor(nodeName: str) -> str:
    """A file-name-safe case id from a node name (the engine names its outputs after the input file)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeName).strip("._") or "input"


def exportVolume(volumeNode: "slicer.vtkMRMLVolumeNode", path: Path) -> None:
    """Write a volume node (scalar or label map) to ``path`` in its physical geometry (RAS → file LPS).

    Raises:
        RuntimeError: the file could not be written.
    """
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(True)
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
        brainMask, model, device, threshold: passed to ``anomalyseg segment``.
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
        self.caseDone: ProgressEvent | None = None
        self.errors: list[str] = []
        self.logTail: list[str] = []

        inputPath = self.workFolder / f"{self.caseId}.nii.gz"
        exportVolume(inputVolume, inputPath)
        maskPath = None
        if brainMask is not None:
            maskPath = self.workFolder / "brain_mask.nii.gz"
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
        of its log).
        """
        try:
            if self.process.cancelled:
                return None, ""
            if self.process.returncode != 0 or self.caseDone is None:
                detail = self.errors[-1:] or self.logTail[-3:] or [f"exit status {self.process.returncode}"]
                return None, "; ".join(detail)
            threshold = self.caseDone.fields.get("threshold")
            files = ResultFiles.inFolder(self.resultsFolder, self.caseDone.case or self.caseId)
            results = SceneGlue.importResults(
                files, self.inputVolume, self.volumesLogic, self.segmentationsLogic,
                threshold=None if threshold is None else float(threshold),
                importReconstruction=self.importReconstruction, showIn3D=self.showIn3D)
            return results, ""
        finally:
            shutil.rmtree(self.workFolder, ignore_errors=True)

    def _onEvent(self, event: ProgressEvent) -> None:
        if event.event == "case_done":
            self.caseDone = event
        elif event.event == "error":
            self.errors.append(event.message)
        if self.onProgress:
            self.onProgress(event)

    def _onLog(self, line: str) -> None:
        self.logTail = (self.logTail + [line])[-20:]
        if self.onLog:
            self.onLog(line)
