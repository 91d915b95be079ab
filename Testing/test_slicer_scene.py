"""Scene glue of the Slicer module on a real MRML scene (slicer-core, no Qt).

The results folder is made here from real data with the file names of the ``anomalyseg segment``
contract: MRBrainTumor1 as the input and as the "reconstruction", its tumour label (value 9),
smoothed, as the "anomaly map", the map above 0.5 as the mask and, written by the engine's
segmentation writer, as the ``.seg.nrrd``: known inputs make the glue's checks exact. The last test
imports a real ``segment`` run (a tiny trained model) through the module's own engine driver.
What needs the Slicer application itself (widgets, dialogs, the subprocess under PythonSlicer) is
covered by ``AnomalySegTest`` inside Slicer; see docs/slicer.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "AnomalySeg"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import vtk  # noqa: E402
from AnomalySegLib.io.segmentation_io import ANOMALY_SEGMENT, write_segmentation  # noqa: E402
from AnomalySegModuleLib import SceneGlue  # noqa: E402
from AnomalySegModuleLib import SegmentationRun  # noqa: E402
from AnomalySegModuleLib.Results import ResultFiles  # noqa: E402
from slicer_scene import build_scene  # noqa: E402

TUMOUR_LABEL = 9
THRESHOLD = 0.5
CASE = "mrbraintumor1"
CASE_OF_SCENE_VOLUME = "MRBrainTumor1"  # the module names the exported file after the node


@pytest.fixture(scope="module")
def results(real_data, tmp_path_factory) -> tuple[Path, ResultFiles, np.ndarray]:
    """A results folder as ``segment`` writes it; also returns the mask array ``[k, j, i]``."""
    folder = tmp_path_factory.mktemp("segment-output")
    files = ResultFiles.inFolder(folder, CASE)
    image = sitk.ReadImage(str(real_data("mrbraintumor1")))
    labels = sitk.ReadImage(str(real_data("mrbraintumor1_labels")))
    tumour = sitk.Cast(labels == TUMOUR_LABEL, sitk.sitkFloat32)
    anomaly_map = sitk.SmoothingRecursiveGaussian(tumour, 2.0)
    anomaly_map.CopyInformation(image)
    mask = sitk.Cast(anomaly_map > THRESHOLD, sitk.sitkUInt8)
    sitk.WriteImage(image, str(files.reconstruction))
    sitk.WriteImage(anomaly_map, str(files.anomalyMap))
    sitk.WriteImage(mask, str(files.anomalyMask))
    write_segmentation(mask, files.segmentation)
    return real_data("mrbraintumor1"), files, sitk.GetArrayFromImage(mask).astype(bool)


@pytest.fixture()
def imported(results):
    """A scene with MRBrainTumor1 in a patient folder and the results imported onto it."""
    input_path, files, _ = results
    app = build_scene()
    input_volume = app.load_volume(input_path, "MRBrainTumor1")
    hierarchy = app.scene.GetSubjectHierarchyNode()
    patient = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Patient 1")
    hierarchy.SetItemParent(hierarchy.GetItemByDataNode(input_volume), patient)
    imported = SceneGlue.importResults(files, input_volume, app.volumes_logic, app.segmentations_logic,
                                       threshold=THRESHOLD)
    return app, imported, patient


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_volumes_are_imported_on_the_input_geometry(imported):
    app, result, _ = imported
    names = {result.reconstructionNode.GetName(), result.anomalyMapNode.GetName(), result.segmentationNode.GetName()}
    assert names == {"MRBrainTumor1 pseudo-healthy", "MRBrainTumor1 anomaly map", "MRBrainTumor1 anomaly"}
    assert result.inputVolume.GetStorageNode().GetFileName().endswith("mrbraintumor1.nii.gz")
    for node in (result.reconstructionNode, result.anomalyMapNode):
        assert app.scene.GetNodeByID(node.GetID()) is node
        assert node.GetStorageNode() is not None
        assert node.GetImageData().GetDimensions() == result.inputVolume.GetImageData().GetDimensions()
        np.testing.assert_allclose(_ijk_to_ras(node), _ijk_to_ras(result.inputVolume), atol=1e-4)


def test_segment_matches_the_mask_voxel_for_voxel_with_name_colour_and_terminology(imported, results):
    _, result, _ = imported
    _, _, mask = results
    segmentation = result.segmentationNode.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetSegment(result.segmentId)
    assert segment.GetName() == "Anomaly"
    np.testing.assert_allclose(segment.GetColor(), ANOMALY_SEGMENT.color, atol=1e-6)
    terminology = segment.GetTerminology()
    assert terminology == ANOMALY_SEGMENT.terminology.to_string()
    assert "SCT^49755003^Morphologically Altered Structure" in terminology
    assert "SCT^4147007^Mass" in terminology and "SCT^12738006^Brain" in terminology
    # Geometry: the segment on the input's voxel grid is exactly the mask written in native space.
    on_input_grid = SceneGlue.segmentMaskOnGridOf(result.inputVolume, result.segmentationNode, result.segmentId)
    assert on_input_grid.shape == mask.shape and mask.sum() > 1000
    np.testing.assert_array_equal(on_input_grid, mask)
    reference_role = result.segmentationNode.GetReferenceImageGeometryReferenceRole()
    assert result.segmentationNode.GetNodeReferenceID(reference_role) == result.inputVolume.GetID()


def test_results_sit_next_to_the_input_in_the_subject_hierarchy(imported):
    app, result, patient = imported
    hierarchy = app.scene.GetSubjectHierarchyNode()
    for node in (result.reconstructionNode, result.anomalyMapNode, result.segmentationNode):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == patient, node.GetName()


def test_anomaly_map_is_a_coloured_foreground_with_low_scores_transparent(imported):
    app, result, _ = imported
    display = result.anomalyMapNode.GetDisplayNode()
    assert display.GetColorNodeID() == SceneGlue.ANOMALY_MAP_COLOR_NODE_ID
    assert app.scene.GetNodeByID(display.GetColorNodeID()) is not None
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(THRESHOLD)
    composites = [app.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(app.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    assert len(composites) == 3
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == result.inputVolume.GetID()
        assert composite.GetForegroundVolumeID() == result.anomalyMapNode.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(SceneGlue.ANOMALY_MAP_OPACITY)


def test_volume_in_ml_and_findings_match_the_mask(imported, results):
    _, result, _ = imported
    input_path, _, mask = results
    voxel_ml = float(np.prod(sitk.ReadImage(str(input_path)).GetSpacing())) / 1000.0
    assert result.statistics.volumeMl == pytest.approx(mask.sum() * voxel_ml, rel=1e-9)
    assert result.statistics.findings == ndimage.label(mask, structure=np.ones((3, 3, 3)))[1] >= 1
    assert result.statistics.threshold == THRESHOLD


def test_rethresholding_replaces_the_segment_from_the_stored_map(imported, results):
    _, result, _ = imported
    _, files, mask = results
    scores = sitk.GetArrayFromImage(sitk.ReadImage(str(files.anomalyMap)))
    stricter = SceneGlue.thresholdAnomalyMap(result.anomalyMapNode, result.segmentationNode, result.segmentId, 0.8)
    expected = scores > 0.8
    assert 0 < expected.sum() < mask.sum()
    np.testing.assert_array_equal(
        SceneGlue.segmentMaskOnGridOf(result.inputVolume, result.segmentationNode, result.segmentId), expected)
    assert stricter.volumeMl < result.statistics.volumeMl and stricter.threshold == 0.8
    assert result.anomalyMapNode.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.8)
    back = SceneGlue.thresholdAnomalyMap(result.anomalyMapNode, result.segmentationNode, result.segmentId, THRESHOLD)
    assert back.volumeMl == pytest.approx(result.statistics.volumeMl)
    assert result.segmentationNode.GetSegmentation().GetSegment(result.segmentId).GetName() == "Anomaly"


def test_threshold_is_recovered_from_the_mask_when_not_reported(results):
    input_path, files, mask = results
    app = build_scene()
    input_volume = app.load_volume(input_path, "MRBrainTumor1")
    result = SceneGlue.importResults(files, input_volume, app.volumes_logic, app.segmentations_logic,
                                     importReconstruction=False)
    assert result.reconstructionNode is None
    assert app.scene.GetFirstNodeByName("MRBrainTumor1 pseudo-healthy") is None
    scores = sitk.GetArrayFromImage(sitk.ReadImage(str(files.anomalyMap))).astype(np.float64)
    assert np.array_equal(scores > result.statistics.threshold, mask)
    assert THRESHOLD <= result.statistics.threshold < scores[mask].min()


def test_closed_surface_on_request(results):
    input_path, files, _ = results
    app = build_scene()
    input_volume = app.load_volume(input_path, "MRBrainTumor1")
    result = SceneGlue.importResults(files, input_volume, app.volumes_logic, app.segmentations_logic,
                                     threshold=THRESHOLD, showIn3D=True)
    surface = result.segmentationNode.GetClosedSurfaceInternalRepresentation(result.segmentId)
    assert surface is not None and surface.GetNumberOfPoints() > 100


def test_missing_outputs_are_named(results, tmp_path):
    input_path, _, _ = results
    app = build_scene()
    input_volume = app.load_volume(input_path, "MRBrainTumor1")
    files = ResultFiles.inFolder(tmp_path, CASE)
    with pytest.raises(FileNotFoundError, match="mrbraintumor1_anomaly_map.nii.gz"):
        SceneGlue.importResults(files, input_volume, app.volumes_logic, app.segmentations_logic)


# --- batch mode: scripts/slicer_batch_segment.py (its Slicer part runs only inside Slicer) ---

def test_batch_script_pairs_volumes_with_their_brain_masks(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    import slicer_batch_segment as batch

    for name in ("b.nii.gz", "a.nrrd", "a_mask.nrrd", "c.mha", "c_brain.mha", "notes.txt", "d_mask.nii"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.nii.gz").mkdir()
    cases = batch.findCases(tmp_path, "_mask")
    assert [(volume.name, mask.name if mask else None) for volume, mask in cases] == [
        ("a.nrrd", "a_mask.nrrd"), ("b.nii.gz", None), ("c.mha", None), ("c_brain.mha", None)]
    assert batch.caseName(Path("x/case.01.nii.gz")) == "case.01"
    assert batch.main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2


# --- exporting inputs and running the engine: AnomalySegModuleLib/SegmentationRun.py ---

def test_exported_volume_keeps_voxels_and_geometry(results, tmp_path):
    input_path, _, _ = results
    app = build_scene()
    input_volume = app.load_volume(input_path, "MRBrainTumor1")
    exported = tmp_path / "exported.nii.gz"
    SegmentationRun.exportVolume(input_volume, exported)
    original, written = sitk.ReadImage(str(input_path)), sitk.ReadImage(str(exported))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(original))
    np.testing.assert_allclose(written.GetOrigin(), original.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(written.GetSpacing(), original.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), original.GetDirection(), atol=1e-5)


def test_brain_mask_from_a_segmentation_is_exported_on_the_input_grid(results, tmp_path):
    input_path, files, mask = results
    app = build_scene()
    input_volume = app.load_volume(input_path, "MRBrainTumor1")
    segmentation = app.segmentations_logic.LoadSegmentationFromFile(str(files.segmentation), False, "mask")
    exported = tmp_path / "brain_mask.nii.gz"
    SegmentationRun.exportBrainMask(segmentation, input_volume, exported)
    written = sitk.ReadImage(str(exported))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written) > 0, mask)
    assert written.GetSize() == sitk.ReadImage(str(input_path)).GetSize()
    assert app.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0  # the helper node is gone


def test_a_failing_engine_run_reports_its_message_and_imports_nothing(results, tmp_path):
    input_path, _, _ = results
    app = build_scene()
    input_volume = app.load_volume(input_path, "MRBrain Tumor#1")
    nodes_before = app.scene.GetNumberOfNodes()
    work = tmp_path / "work"
    work.mkdir()
    logs = []
    run = SegmentationRun.SegmentationRun(input_volume, work, sys.executable, app.volumes_logic,
                                          app.segmentations_logic, model=str(tmp_path / "no-such-model"),
                                          device="cpu", onLog=logs.append)
    assert (work / "MRBrain_Tumor_1.nrrd").is_file()
    assert run.command[1:5] == ["-m", "AnomalySegLib", "segment", str(work / "MRBrain_Tumor_1.nrrd")]
    run.start()
    run.wait()
    imported, message = run.finish()
    assert imported is None and run.process.returncode != 0
    # The engine's last error event, or else the end of its log (here argparse's usage error, or the
    # CLI's one-line error about the missing model once 'segment' exists).
    assert message and message == (run.errors[-1] if run.errors else "; ".join(logs[-3:]))
    assert not work.exists()
    assert app.scene.GetNumberOfNodes() == nodes_before


def test_real_segment_run_through_the_module_driver_is_imported_onto_the_input(real_data, tiny_bundle, tmp_path):
    """The module's own path: export the scene volume, run ``python -m AnomalySegLib segment`` in a
    subprocess (PythonSlicer inside Slicer) with JSON progress, import what it wrote."""
    app = build_scene()
    input_volume = app.load_volume(real_data("mrbraintumor1"), "MRBrainTumor1")
    work = tmp_path / "work"
    work.mkdir()
    kept = tmp_path / "kept"
    events = []
    run = SegmentationRun.SegmentationRun(input_volume, work, sys.executable, app.volumes_logic,
                                          app.segmentations_logic, model=str(tiny_bundle), device="cpu",
                                          outputFolder=kept, onProgress=events.append)
    run.start()
    run.wait()
    result, message = run.finish()
    assert message == "" and result is not None, message

    assert {e.event for e in events} >= {"start", "progress", "case_done", "done"}
    fractions = [e.fraction for e in events if e.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    for node in (result.reconstructionNode, result.anomalyMapNode):
        assert node.GetImageData().GetDimensions() == input_volume.GetImageData().GetDimensions()
        np.testing.assert_allclose(_ijk_to_ras(node), _ijk_to_ras(input_volume), atol=1e-4)
    segment = result.segmentationNode.GetSegmentation().GetSegment(result.segmentId)
    assert segment.GetName() == ANOMALY_SEGMENT.name
    assert segment.GetTerminology() == ANOMALY_SEGMENT.terminology.to_string()
    np.testing.assert_allclose(segment.GetColor(), ANOMALY_SEGMENT.color, atol=1e-6)

    files = ResultFiles.inFolder(kept, CASE_OF_SCENE_VOLUME)
    engine_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(files.anomalyMask))) > 0
    np.testing.assert_array_equal(
        SceneGlue.segmentMaskOnGridOf(input_volume, result.segmentationNode, result.segmentId), engine_mask)
    voxel_ml = float(np.prod(input_volume.GetSpacing())) / 1000.0
    assert result.statistics.volumeMl == pytest.approx(engine_mask.sum() * voxel_ml, rel=1e-9)
    composite = app.scene.GetNthNodeByClass(0, "vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == result.anomalyMapNode.GetID()
    assert composite.GetBackgroundVolumeID() == input_volume.GetID()
