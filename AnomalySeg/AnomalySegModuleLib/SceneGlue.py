"""Putting the results of ``anomalyseg segment`` into a Slicer scene, and re-thresholding them.

Only MRML, VTK, numpy and the engine are used (no Qt, no ``slicer.app``, no ``slicer.util`` functions
that need the application's scene), so this runs inside Slicer and under ``slicer-core`` alike. The
caller passes the module logics it has: in Slicer ``slicer.modules.volumes.logic()`` and
``slicer.modules.segmentations.logic()``.

Arrays from VTK images are ``[k, j, i]`` (slowest axis first), like SimpleITK's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import slicer
import vtk
from slicer.util import NodeModify
from vtk.util import numpy_support

from AnomalySegModuleLib.Findings import FindingRow, findingRowsFromRecords
from AnomalySegModuleLib.Results import ResultFiles

if TYPE_CHECKING:
    from AnomalySegLib.scoring.operating_point import CleanUp

#: A hot colour map that Slicer creates at start-up (no colour file needed).
ANOMALY_MAP_COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
#: Foreground opacity of the anomaly map over the input in the slice views.
ANOMALY_MAP_OPACITY = 0.6


@dataclass(frozen=True)
class AnomalyStatistics:
    """What the results panel shows: the thresholded anomaly's volume, findings and their table.

    ``findings`` counts 26-connected components (the engine's definition); ``threshold`` is the
    anomaly score above which a voxel belongs to the anomaly. ``table`` lists the findings by rank
    (computed by the engine's findings code; ``None`` where that code has no per-finding table).
    """

    volumeMl: float
    findings: int
    threshold: float
    table: "tuple[FindingRow, ...] | None" = None


@dataclass
class ImportedResults:
    """The nodes one ``segment`` run added to the scene, next to ``inputVolume``, and what the engine said.

    ``qcWarnings``: the engine's domain-check warnings for the case (empty: none). ``findingsTable``:
    the engine's findings table at its threshold (empty when it wrote none); after re-thresholding
    the current table is ``statistics.table``. ``device``/``precision``: what the engine ran on.
    ``reused``: the engine found the case finished earlier with the same settings and did not run.
    ``cleanUp``: the model's clean-up the engine applied after its threshold (``None``: none); the
    sensitivity slider re-thresholds with it, so its mask equals what ``segment`` writes.
    """

    inputVolume: "slicer.vtkMRMLScalarVolumeNode"
    reconstructionNode: "slicer.vtkMRMLScalarVolumeNode | None"
    anomalyMapNode: "slicer.vtkMRMLScalarVolumeNode"
    segmentationNode: "slicer.vtkMRMLSegmentationNode"
    segmentId: str
    statistics: AnomalyStatistics
    qcWarnings: list[str] = field(default_factory=list)
    findingsTable: list[FindingRow] = field(default_factory=list)
    device: str = ""
    precision: str = ""
    reused: bool = False
    cleanUp: "CleanUp | None" = None

    @property
    def currentFindings(self) -> list[FindingRow]:
        """The findings table of the segment as it is now (after any re-thresholding)."""
        return list(self.statistics.table) if self.statistics.table is not None else self.findingsTable


def importResults(
    files: ResultFiles,
    inputVolume: "slicer.vtkMRMLScalarVolumeNode",
    volumesLogic: "slicer.vtkSlicerVolumesLogic",
    segmentationsLogic: "slicer.vtkSlicerSegmentationsModuleLogic",
    threshold: float | None = None,
    importReconstruction: bool = True,
    showIn3D: bool = False,
) -> ImportedResults:
    """Load one case's outputs and show them on ``inputVolume``.

    The reconstruction and the anomaly map become scalar volumes, the ``.seg.nrrd`` a segmentation
    node whose segment gets the engine's name, colour and terminology and the input's geometry as
    reference; all are placed next to the input in the subject hierarchy. The anomaly map is shown
    as the foreground of every slice view over the input, with scores below ``threshold`` (the one
    the engine used; read from the mask when ``None``) transparent.

    Raises:
        FileNotFoundError: an output file is missing.
        RuntimeError: Slicer could not read a file, or the segmentation holds no segment.
    """
    missing = files.missing(("anomalyMap", "segmentation") + (("reconstruction",) if importReconstruction else ()))
    if missing:
        raise FileNotFoundError(f"{missing[0]}: output of 'anomalyseg segment' is missing")
    baseName = inputVolume.GetName()
    reconstructionNode = None
    if importReconstruction:
        reconstructionNode = _loadVolume(volumesLogic, files.reconstruction, f"{baseName} pseudo-healthy")
        _showGreyscale(reconstructionNode, inputVolume)
        placeNextTo(reconstructionNode, inputVolume)
    anomalyMapNode = _loadVolume(volumesLogic, files.anomalyMap, f"{baseName} anomaly map")
    placeNextTo(anomalyMapNode, inputVolume)

    segmentationNode = segmentationsLogic.LoadSegmentationFromFile(str(files.segmentation), False,
                                                                   f"{baseName} anomaly")
    if segmentationNode is None:
        raise RuntimeError(f"{files.segmentation}: Slicer could not read this segmentation")
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        raise RuntimeError(f"{files.segmentation}: the segmentation holds no segment")
    segmentId = segmentation.GetNthSegmentID(0)
    styleAnomalySegment(segmentationNode, segmentId)
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
    segmentationNode.CreateDefaultDisplayNodes()
    if showIn3D:
        segmentationNode.CreateClosedSurfaceRepresentation()
    placeNextTo(segmentationNode, inputVolume)

    if threshold is None:
        threshold = thresholdOfMask(anomalyMapNode, segmentationNode, segmentId)
    showAnomalyMap(inputVolume, anomalyMapNode, threshold)
    statistics = anomalyStatistics(anomalyMapNode, segmentationNode, segmentId, threshold)
    return ImportedResults(inputVolume, reconstructionNode, anomalyMapNode, segmentationNode, segmentId, statistics)


def cleanUpOf(operatingPoint: "dict | None") -> "CleanUp | None":
    """The clean-up of the engine's ``operating_point`` record (``case_done`` event, ``_result.json``);
    ``None`` when the record is missing (an engine before the operating-point rule)."""
    if not operatingPoint:
        return None
    from AnomalySegLib.scoring.operating_point import CLEAN_UP_KEYS, CleanUp

    return CleanUp(**{key: float(operatingPoint.get(key, 0.0)) for key in CLEAN_UP_KEYS})


def resultsFromNodes(inputVolume: "slicer.vtkMRMLScalarVolumeNode",
                     anomalyMapNode: "slicer.vtkMRMLScalarVolumeNode",
                     segmentationNode: "slicer.vtkMRMLSegmentationNode", segmentId: str, threshold: float,
                     qcWarnings: list[str] | None = None, cleanUp: "CleanUp | None" = None) -> ImportedResults:
    """The results of an earlier run from the nodes a scene kept (e.g. a reloaded ``.mrb``).

    The statistics and the findings table are computed again from the segment as it is, so the
    re-threshold slider and the findings table work as right after the run.

    Raises:
        ValueError: the segmentation has no segment ``segmentId``.
    """
    if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise ValueError(f"{segmentationNode.GetName()} has no segment {segmentId!r}")
    statistics = anomalyStatistics(anomalyMapNode, segmentationNode, segmentId, threshold)
    return ImportedResults(inputVolume, None, anomalyMapNode, segmentationNode, segmentId, statistics,
                           qcWarnings=list(qcWarnings or []), cleanUp=cleanUp)


def styleAnomalySegment(segmentationNode: "slicer.vtkMRMLSegmentationNode", segmentId: str) -> None:
    """Give the segment the engine's name, colour and terminology (docs/design.md, "The engine and the Slicer module")."""
    from AnomalySegLib.io.segmentation_io import ANOMALY_SEGMENT

    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    segment.SetName(ANOMALY_SEGMENT.name)
    segment.SetColor(*ANOMALY_SEGMENT.color)
    segment.SetTerminology(ANOMALY_SEGMENT.terminology.to_string())


def placeNextTo(node: "slicer.vtkMRMLNode", referenceNode: "slicer.vtkMRMLNode") -> None:
    """Put ``node`` under the same subject hierarchy parent (patient, study, folder) as ``referenceNode``."""
    hierarchy = referenceNode.GetScene().GetSubjectHierarchyNode()
    referenceItem = hierarchy.GetItemByDataNode(referenceNode)
    parentItem = hierarchy.GetItemParent(referenceItem) if referenceItem else hierarchy.GetSceneItemID()
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parentItem)
    else:  # outside the Slicer application no subject hierarchy plugin creates items for new nodes
        hierarchy.CreateItem(parentItem, node)


def showAnomalyMap(inputVolume: "slicer.vtkMRMLScalarVolumeNode",
                   anomalyMapNode: "slicer.vtkMRMLScalarVolumeNode", transparentBelow: float,
                   opacity: float = ANOMALY_MAP_OPACITY) -> None:
    """Hot colour map, scores below ``transparentBelow`` transparent, as foreground over the input.

    Every slice view of the scene (its slice composite node) shows ``inputVolume`` as background
    and the anomaly map as foreground with ``opacity``.
    """
    if anomalyMapNode.GetDisplayNode() is None:
        anomalyMapNode.CreateDefaultDisplayNodes()
    display = anomalyMapNode.GetDisplayNode()
    high = float(anomalyMapNode.GetImageData().GetScalarRange()[1])
    low = min(float(transparentBelow), high)
    with NodeModify(display):
        display.SetAndObserveColorNodeID(ANOMALY_MAP_COLOR_NODE_ID)
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(low, high if high > low else low + 1e-6)
        display.SetApplyThreshold(True)  # below the lower threshold a voxel is transparent in slice views
        display.SetLowerThreshold(low)
        display.SetUpperThreshold(max(high, low))
    scene = inputVolume.GetScene()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        with NodeModify(composite):
            composite.SetBackgroundVolumeID(inputVolume.GetID())
            composite.SetForegroundVolumeID(anomalyMapNode.GetID())
            composite.SetForegroundOpacity(opacity)


def showOverlayFloor(anomalyMapNode: "slicer.vtkMRMLScalarVolumeNode", threshold: float) -> None:
    """Make scores below ``threshold`` transparent in the slice views, at once (display only).

    While the threshold slider moves, the overlay follows it through this; the segment and the
    statistics follow when the slider rests (:func:`thresholdAnomalyMap`, seconds on a large map).
    """
    display = anomalyMapNode.GetDisplayNode()
    if display is not None:
        display.SetLowerThreshold(float(threshold))


def thresholdAnomalyMap(anomalyMapNode: "slicer.vtkMRMLScalarVolumeNode",
                        segmentationNode: "slicer.vtkMRMLSegmentationNode", segmentId: str,
                        threshold: float, cleanUp: "CleanUp | None" = None,
                        region: "np.ndarray | None" = None) -> AnomalyStatistics:
    """Replace the segment by the operating point's mask of the anomaly map (no network run).

    This is what the sensitivity slider does; it also moves the transparency floor of the map. The mask
    comes from the engine's one rule (:func:`AnomalySegLib.scoring.operating_point.apply_operating_point`:
    ``score > threshold``, then ``cleanUp``, the model's rim erosion, median and minimum finding size in
    ml; ``None``: no clean-up), on the map's own voxel grid, so it equals the mask ``segment`` writes for
    the same threshold. ``region`` is the threshold-independent
    :func:`~AnomalySegLib.scoring.operating_point.rim_eroded_region` of this map, when cached by the caller.
    """
    from AnomalySegLib.scoring.operating_point import RAW, apply_operating_point, voxel_size_zyx

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    scores = logic.CreateOrientedImageDataFromVolumeNode(anomalyMapNode)
    maskArray = apply_operating_point(_array(scores), voxel_size_zyx(anomalyMapNode.GetSpacing()), float(threshold),
                                      RAW if cleanUp is None else cleanUp, region)
    mask = slicer.vtkOrientedImageData()
    mask.SetExtent(scores.GetExtent())
    mask.SetOrigin(scores.GetOrigin())
    mask.SetSpacing(scores.GetSpacing())
    mask.CopyDirections(scores)
    voxels = numpy_support.numpy_to_vtk(maskArray.astype(np.uint8).ravel(), deep=True,
                                        array_type=vtk.VTK_UNSIGNED_CHAR)
    mask.GetPointData().SetScalars(voxels)
    if not logic.SetBinaryLabelmapToSegment(mask, segmentationNode, segmentId, logic.MODE_REPLACE):
        raise RuntimeError(f"could not update segment {segmentId} of {segmentationNode.GetName()}")
    display = anomalyMapNode.GetDisplayNode()
    if display is not None:
        display.SetLowerThreshold(float(threshold))
    return anomalyStatistics(anomalyMapNode, segmentationNode, segmentId, threshold)


def segmentMaskOnGridOf(volumeNode: "slicer.vtkMRMLScalarVolumeNode",
                        segmentationNode: "slicer.vtkMRMLSegmentationNode", segmentId: str) -> np.ndarray:
    """The segment as a bool array ``[k, j, i]`` on the voxel grid of ``volumeNode``."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    reference = logic.CreateOrientedImageDataFromVolumeNode(volumeNode)
    segmentImage = slicer.vtkOrientedImageData()
    if not logic.GetSegmentBinaryLabelmapRepresentation(segmentationNode, segmentId, segmentImage):
        raise RuntimeError(f"segment {segmentId} of {segmentationNode.GetName()} has no labelmap")
    onGrid = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        segmentImage, reference, onGrid)
    return _array(onGrid) > 0


def anomalyStatistics(anomalyMapNode: "slicer.vtkMRMLScalarVolumeNode",
                      segmentationNode: "slicer.vtkMRMLSegmentationNode", segmentId: str,
                      threshold: float) -> AnomalyStatistics:
    """Volume (ml), number and table of findings of the segment, computed by the engine's own code.

    The images handed to the engine carry the map's full geometry (origin, spacing, direction), so
    that positions in the table are in the scene's RAS millimetres.
    """
    from AnomalySegLib.reporting.findings import summarize_findings

    mask = _sitkImageOnGridOf(segmentMaskOnGridOf(anomalyMapNode, segmentationNode, segmentId).astype(np.uint8),
                              anomalyMapNode)
    scores = _sitkImageOnGridOf(_array(anomalyMapNode.GetImageData()).astype(np.float32), anomalyMapNode)
    findings = summarize_findings(mask, scores)
    # Merge glue: the per-finding table (Findings.records(), CONTRACTS.md) comes with branch c-oppoint.
    records = getattr(findings, "records", None)
    table = tuple(findingRowsFromRecords(records())) if callable(records) else None
    return AnomalyStatistics(volumeMl=findings.volume_ml, findings=findings.components, threshold=float(threshold),
                             table=table)


def thresholdOfMask(anomalyMapNode: "slicer.vtkMRMLScalarVolumeNode",
                    segmentationNode: "slicer.vtkMRMLSegmentationNode", segmentId: str) -> float:
    """The largest threshold reproducing the segment from the map: just below its lowest score.

    For results whose threshold was not reported; an empty segment gives the map's maximum.
    """
    scores = _array(anomalyMapNode.GetImageData())
    inside = segmentMaskOnGridOf(anomalyMapNode, segmentationNode, segmentId)
    lowest = float(scores[inside].min()) if inside.any() else float(scores.max())
    return math.nextafter(lowest, -math.inf)


def _loadVolume(volumesLogic, path: Path, name: str) -> "slicer.vtkMRMLScalarVolumeNode":
    singleFile = 4  # loading option bit: read this file only, not a numbered series around it
    node = volumesLogic.AddArchetypeScalarVolume(str(path), name, singleFile, None)
    if node is None:
        raise RuntimeError(f"{path}: Slicer could not read this volume")
    return node


def _showGreyscale(volumeNode, likeVolume) -> None:
    """Grey colour map and the window/level of ``likeVolume`` (the reconstruction shares its intensities)."""
    if volumeNode.GetDisplayNode() is None:
        volumeNode.CreateDefaultDisplayNodes()
    display, reference = volumeNode.GetDisplayNode(), likeVolume.GetDisplayNode()
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    if reference is not None and not reference.GetAutoWindowLevel():
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(reference.GetWindow(), reference.GetLevel())


def _sitkImageOnGridOf(array: np.ndarray, volumeNode: "slicer.vtkMRMLVolumeNode"):
    """A SimpleITK image of ``array`` (``[k, j, i]``) with the geometry of ``volumeNode`` (RAS → LPS)."""
    import SimpleITK as sitk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    ijkToRas = np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])
    ijkToLps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijkToRas
    spacing = np.linalg.norm(ijkToLps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(tuple(float(value) for value in ijkToLps[:3, 3]))
    image.SetSpacing(tuple(float(value) for value in spacing))
    image.SetDirection(tuple(float(value) for value in (ijkToLps[:3, :3] / spacing).ravel()))
    return image


def _array(image: "vtk.vtkImageData") -> np.ndarray:
    """The scalars of ``image`` as an array ``[k, j, i]`` (a view; copy before changing it)."""
    i, j, k = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)
