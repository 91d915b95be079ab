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

import csv
import json
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


def test_rethresholding_applies_the_engines_clean_up(imported, results):
    """The slider's path with a model's clean-up gives the engine rule's mask of the stored map."""
    from AnomalySegLib.scoring.operating_point import CleanUp, apply_operating_point, voxel_size_zyx

    _, result, _ = imported
    _, files, _ = results
    anomaly_map = sitk.ReadImage(str(files.anomalyMap))
    scores = sitk.GetArrayFromImage(anomaly_map)
    clean_up = CleanUp(rim_erosion_mm=2.0, median_mm=3.0, min_finding_ml=1.0)
    expected = apply_operating_point(scores, voxel_size_zyx(anomaly_map.GetSpacing()), 0.3, clean_up)
    assert 0 < expected.sum() < (scores > 0.3).sum()
    statistics = SceneGlue.thresholdAnomalyMap(result.anomalyMapNode, result.segmentationNode, result.segmentId,
                                               0.3, clean_up)
    np.testing.assert_array_equal(
        SceneGlue.segmentMaskOnGridOf(result.inputVolume, result.segmentationNode, result.segmentId), expected)
    assert statistics.findings == ndimage.label(expected, structure=np.ones((3, 3, 3)))[1]


def test_engines_operating_point_record_gives_the_sliders_clean_up():
    """The clean-up the engine reports (``case_done``/``_result.json`` ``operating_point``) is what the
    slider applies; without a record (an older engine) the slider thresholds alone."""
    from AnomalySegLib.scoring.operating_point import CleanUp, OperatingPoint

    clean_up = CleanUp(rim_erosion_mm=2.0, median_mm=6.0, min_finding_ml=0.25)
    record = OperatingPoint(0.4, "val", clean_up).to_info()
    assert SceneGlue.cleanUpOf(record) == clean_up
    assert SceneGlue.cleanUpOf(None) is None and SceneGlue.cleanUpOf({}) is None


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
    exported = tmp_path / f"exported{SegmentationRun.EXPORT_SUFFIX}"
    SegmentationRun.exportVolume(input_volume, exported)
    header = exported.read_bytes()[:1000].split(b"\n\n")[0].decode("ascii")
    assert "encoding: raw" in header  # uncompressed: the engine reads it once, seconds later
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


# --- what the slice views show: the composited slice rendered without the GUI (DESIGN.md §5) ---

def _ras_to_ijk(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _mask_centroid_ras(node, mask: np.ndarray) -> np.ndarray:
    """Centre of ``mask`` (``[k, j, i]`` on the grid of ``node``) in RAS mm."""
    k, j, i = np.argwhere(mask).mean(axis=0)
    return (_ijk_to_ras(node) @ np.array([i, j, k, 1.0]))[:3]


def _scores_under_pixels(app, scores: np.ndarray, map_node, size: int) -> np.ndarray:
    """The anomaly score (linear interpolation) under each pixel ``[y, x]`` (row 0 at the top) of the Red view."""
    slice_node = app.slice_logics[0].GetSliceNode()
    xy_to_ras = slice_node.GetXYToRAS()
    matrix = np.array([[xy_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    x, y = np.meshgrid(np.arange(size, dtype=float), np.arange(size, dtype=float))
    xy = np.stack([x.ravel(), y.ravel(), np.zeros(x.size), np.ones(x.size)])
    ijk = _ras_to_ijk(map_node) @ (matrix @ xy)
    sampled = ndimage.map_coordinates(scores, [ijk[2], ijk[1], ijk[0]], order=1, cval=0.0)
    return sampled.reshape(size, size)[::-1]


def _centre_red_view_on_the_finding(app, result, mask, size: int) -> None:
    from AnomalySegModuleLib.Findings import jumpSlicesTo

    slice_node = app.slice_logics[0].GetSliceNode()
    slice_node.SetOrientation("Axial")
    slice_node.SetDimensions(size, size, 1)
    app.slice_logics[0].FitSliceToAll()
    jumpSlicesTo(app.scene, _mask_centroid_ras(result.inputVolume, mask))


def test_slice_view_shows_hot_overlay_where_the_map_is_high_and_the_input_elsewhere(imported, results, tmp_path):
    """Render the Red view's composited slice (input + anomaly map foreground) through the finding's
    centre, once with the overlay and once without: the pixels that change are exactly those whose
    score exceeds the threshold (the rest of the map is transparent), and they are hot (red > blue)."""
    from slicer_scene import render_slice_view, write_png

    app, result, _ = imported
    _, files, mask = results
    size = 256
    _centre_red_view_on_the_finding(app, result, mask, size)
    with_overlay = render_slice_view(app, "Red", (size, size))
    write_png(with_overlay, tmp_path / "red_with_anomaly_map.png")
    composite = app.scene.GetNthNodeByClass(0, "vtkMRMLSliceCompositeNode")
    assert composite.GetLayoutName() == "Red"
    composite.SetForegroundOpacity(0.0)
    without_overlay = render_slice_view(app, "Red", (size, size))
    composite.SetForegroundOpacity(SceneGlue.ANOMALY_MAP_OPACITY)

    scores = sitk.GetArrayFromImage(sitk.ReadImage(str(files.anomalyMap))).astype(np.float64)
    under = _scores_under_pixels(app, scores, result.anomalyMapNode, size)
    changed = np.abs(with_overlay[..., :3].astype(int) - without_overlay[..., :3].astype(int)).max(axis=-1) > 8
    above = under > THRESHOLD
    assert above.sum() > 200, "the slice through the finding's centre must cut the finding"
    # Where the score is clearly below the threshold the overlay is transparent: the input alone.
    assert not changed[under < THRESHOLD - 0.05].any()
    # Where it is clearly above, the overlay shows (boundary pixels depend on interpolation order).
    assert changed[under > THRESHOLD + 0.05].all()
    overlap = (changed & above).sum() / (changed | above).sum()
    assert overlap > 0.9, overlap
    hot = with_overlay[changed].astype(int)
    assert (hot[:, 0] > hot[:, 2]).mean() > 0.95  # the heat colour map: red dominates blue
    # The view is centred on the finding: its centre pixel shows the overlay.
    assert changed[size // 2, size // 2]
    # The background is the input: bright brain where there is no overlay.
    assert without_overlay[..., :3].max() > 150 and with_overlay[~changed][..., :3].max() > 150


def test_slice_view_draws_the_segment_in_its_colour_over_the_finding(imported, results, tmp_path):
    """The whole slice view offscreen, segmentations included (Segmentations displayable manager in
    an EGL render window): with the segment shown, exactly the pixels over the mask change, towards
    the segment's orange; the view centred on the finding has the segment at its centre."""
    from slicer_scene import render_slice_view_with_segmentations, write_png

    app, result, _ = imported
    _, files, mask = results
    size = 256
    _centre_red_view_on_the_finding(app, result, mask, size)
    with_segment = render_slice_view_with_segmentations(app, "Red", (size, size))
    write_png(with_segment, tmp_path / "red_with_segment.png")
    display = result.segmentationNode.GetDisplayNode()
    display.SetVisibility(False)
    without_segment = render_slice_view_with_segmentations(app, "Red", (size, size))
    display.SetVisibility(True)

    changed = np.abs(with_segment.astype(int) - without_segment.astype(int)).max(axis=-1) > 8
    inside = _scores_under_pixels(app, mask.astype(np.float64), result.anomalyMapNode, size) > 0.5
    assert inside.sum() > 200 and changed[size // 2, size // 2]
    assert not changed[~ndimage.binary_dilation(inside, iterations=2)].any()  # nothing drawn away from the mask
    assert changed[ndimage.binary_erosion(inside, iterations=2)].all()  # the fill covers the inside
    orange = np.array(ANOMALY_SEGMENT.color) * 255
    before = np.linalg.norm(without_segment[changed] - orange, axis=-1)
    after = np.linalg.norm(with_segment[changed] - orange, axis=-1)
    assert (after < before).mean() > 0.95


# --- findings table: read from the engine, jumped to; results kept for a reloaded scene ---

def _findings_csv_as_the_contract_describes(path: Path, image: sitk.Image, scores: np.ndarray,
                                            mask: np.ndarray) -> list[dict]:
    """``<case>_findings.csv`` as branch c-oppoint writes it (not on this branch yet): one flat row per
    26-connected finding, largest first, centroid in RAS mm as three columns."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    rows = []
    for label in range(1, count + 1):
        component = labels == label
        k, j, i = np.argwhere(component).mean(axis=0)
        lps = image.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
        ks = np.nonzero(component.any(axis=(1, 2)))[0]
        rows.append({"volume_ml": component.sum() * voxel_ml, "centroid_r_mm": -lps[0], "centroid_a_mm": -lps[1],
                     "centroid_s_mm": lps[2], "extent_r_mm": 0.0, "extent_a_mm": 0.0, "extent_s_mm": 0.0,
                     "max_score": float(scores[component].max()), "mean_score": float(scores[component].mean()),
                     "first_slice": int(ks.min()), "last_slice": int(ks.max())})
    rows.sort(key=lambda row: -row["volume_ml"])
    records = [{"rank": rank, **row} for rank, row in enumerate(rows, start=1)]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    for record in records:
        record["centroid_ras_mm"] = (record["centroid_r_mm"], record["centroid_a_mm"], record["centroid_s_mm"])
    return records


def test_findings_csv_is_read_into_rows_and_a_click_centres_every_slice_view(imported, results, tmp_path):
    from AnomalySegModuleLib.Findings import jumpSlicesTo, readFindingsCsv

    app, result, _ = imported
    input_path, files, mask = results
    scores = sitk.GetArrayFromImage(sitk.ReadImage(str(files.anomalyMap)))
    expected = _findings_csv_as_the_contract_describes(tmp_path / "case_findings.csv", sitk.ReadImage(str(input_path)),
                                                       scores, mask)
    rows = readFindingsCsv(tmp_path / "case_findings.csv")
    assert [row.rank for row in rows] == list(range(1, len(expected) + 1))
    for row, record in zip(rows, expected):
        assert row.volumeMl == pytest.approx(record["volume_ml"], rel=1e-6)
        np.testing.assert_allclose(row.centroidRas, record["centroid_ras_mm"], atol=1e-3)
        assert row.maxScore == pytest.approx(record["max_score"], rel=1e-6)
    assert rows[0].cells()[0] == "1" and rows[0].cells()[1] == f"{expected[0]['volume_ml']:.2f}"

    assert jumpSlicesTo(app.scene, rows[0].centroidRas) == 3
    for index in range(3):
        slice_node = app.scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
        slice_to_ras = slice_node.GetSliceToRAS()
        np.testing.assert_allclose([slice_to_ras.GetElement(r, 3) for r in range(3)], rows[0].centroidRas, atol=1e-6)
    with pytest.raises(ValueError, match="not finite"):
        jumpSlicesTo(app.scene, (0.0, float("nan"), 0.0))

    broken = tmp_path / "broken_findings.csv"
    broken.write_text("rank,volume_ml\n1,2.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken_findings\.csv.*centroid_r_mm"):
        readFindingsCsv(broken)


def test_results_rebuilt_from_the_nodes_a_scene_keeps_can_be_rethresholded(imported, results):
    """What a reloaded scene gives the module: the nodes and values kept in its parameter node."""
    app, result, _ = imported
    _, files, mask = results
    rebuilt = SceneGlue.resultsFromNodes(result.inputVolume, result.anomalyMapNode, result.segmentationNode,
                                         result.segmentId, THRESHOLD, qcWarnings=["slices 6.5 mm thick"])
    assert rebuilt.statistics.volumeMl == pytest.approx(result.statistics.volumeMl)
    assert rebuilt.statistics.findings == result.statistics.findings and rebuilt.qcWarnings == ["slices 6.5 mm thick"]
    stricter = SceneGlue.thresholdAnomalyMap(rebuilt.anomalyMapNode, rebuilt.segmentationNode, rebuilt.segmentId, 0.8)
    scores = sitk.GetArrayFromImage(sitk.ReadImage(str(files.anomalyMap)))
    np.testing.assert_array_equal(
        SceneGlue.segmentMaskOnGridOf(result.inputVolume, rebuilt.segmentationNode, rebuilt.segmentId), scores > 0.8)
    assert 0 < stricter.volumeMl < result.statistics.volumeMl
    with pytest.raises(ValueError, match="no segment 'gone'"):
        SceneGlue.resultsFromNodes(result.inputVolume, result.anomalyMapNode, result.segmentationNode, "gone", 0.5)


def test_findings_table_follows_the_rethresholded_mask(imported, results):
    """After the slider, the table is the engine's findings code run on the new mask, in RAS mm."""
    _, result, _ = imported
    _, files, _ = results
    statistics = SceneGlue.thresholdAnomalyMap(result.anomalyMapNode, result.segmentationNode, result.segmentId, 0.8)
    if statistics.table is None:
        pytest.skip("the engine's per-finding table (Findings.records(), CONTRACTS.md) comes with branch c-oppoint")
    scores = sitk.GetArrayFromImage(sitk.ReadImage(str(files.anomalyMap)))
    labels, count = ndimage.label(scores > 0.8, np.ones((3, 3, 3)))
    assert len(statistics.table) == statistics.findings == count
    assert sum(row.volumeMl for row in statistics.table) == pytest.approx(statistics.volumeMl, rel=1e-6)
    largest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    np.testing.assert_allclose(statistics.table[0].centroidRas, _mask_centroid_ras(result.inputVolume, largest),
                               atol=0.5)
    result.statistics = statistics
    assert result.currentFindings == list(statistics.table)


# --- what the engine reports in its progress events (CONTRACTS.md) ---

_REPLAY = "import json, sys\nfor event in json.loads(sys.argv[1]):\n    print(json.dumps(event), flush=True)\n"


def _contract_engine(events: list[dict]):
    """A process factory for SegmentationRun whose child process prints ``events`` as the engine would.

    The module's real reader (InferenceProcess: child process, reader threads, JSON parsing) runs;
    only the engine is replaced, because the fields replayed here (``device``/``precision`` in
    ``start``; ``qc_warnings``, ``findings_csv``, ``threshold_source`` with ``skipped`` in
    ``case_done``) come from branches a-robust, b-domain and c-oppoint and are not sent by the engine
    of this branch yet. The files they point to are real outputs (the ``results`` fixture).
    """
    from AnomalySegModuleLib.InferenceProcess import InferenceProcess

    class ContractEngine(InferenceProcess):
        def start(self, command, environment=None, workingFolder=None):
            super().start([sys.executable, "-c", _REPLAY, json.dumps(events)], environment, workingFolder)

    return ContractEngine


def _case_done(files: ResultFiles, **fields) -> dict:
    outputs = {"recon": str(files.reconstruction), "anomaly_map": str(files.anomalyMap),
               "anomaly_mask": str(files.anomalyMask), "segmentation": str(files.segmentation),
               "qc": str(files.qcPicture)}
    return {"event": "case_done", "case": CASE, "case_index": 0, "cases": 1, "fraction": 1.0, "outputs": outputs,
            "volume_ml": 1.0, "components": 1, "threshold": THRESHOLD, "threshold_source": "val", **fields}


def _run_contract_engine(results, tmp_path, events, threshold="val"):
    input_path, _, _ = results
    app = build_scene()
    input_volume = app.load_volume(input_path, "MRBrainTumor1")
    work = tmp_path / "work"
    work.mkdir(parents=True)
    logs = []
    run = SegmentationRun.SegmentationRun(input_volume, work, sys.executable, app.volumes_logic,
                                          app.segmentations_logic, threshold=threshold, outputFolder=tmp_path / "out",
                                          onLog=logs.append, processFactory=_contract_engine(events))
    nodes_before = app.scene.GetNumberOfNodes()
    run.start()
    run.wait()
    imported, message = run.finish()
    return app, imported, message, logs, nodes_before


def test_qc_warnings_findings_device_and_precision_reach_the_results_and_the_log(results, tmp_path):
    input_path, files, mask = results
    scores = sitk.GetArrayFromImage(sitk.ReadImage(str(files.anomalyMap)))
    findings_csv = tmp_path / f"{CASE}_findings.csv"
    expected = _findings_csv_as_the_contract_describes(findings_csv, sitk.ReadImage(str(input_path)), scores, mask)
    warning = "slices 6.5 mm thick: thicker than the 1.0-3.0 mm the model was validated on"
    events = [{"event": "start", "protocol": 1, "command": "segment", "cases": 1, "device": "cpu",
               "precision": "fp32"},
              _case_done(files, qc_warnings=[warning], findings_csv=str(findings_csv)),
              {"event": "done", "cases_ok": 1, "cases_failed": 0, "fraction": 1.0}]
    _, imported, message, logs, _ = _run_contract_engine(results, tmp_path, events)
    assert message == "" and imported is not None
    assert imported.qcWarnings == [warning] and not imported.reused
    assert (imported.device, imported.precision) == ("cpu", "fp32")
    assert any("runs on cpu in fp32" in line for line in logs), logs
    assert any(warning in line and "warning" in line for line in logs), logs
    assert [row.rank for row in imported.findingsTable] == [record["rank"] for record in expected]
    np.testing.assert_allclose(imported.findingsTable[0].centroidRas, expected[0]["centroid_ras_mm"], atol=1e-3)
    assert imported.statistics.threshold == THRESHOLD


def test_a_case_the_engine_skipped_at_another_threshold_is_not_imported(results, tmp_path):
    _, files, _ = results
    events = [{"event": "start", "protocol": 1, "command": "segment", "cases": 1},
              _case_done(files, skipped=True, threshold_source="val"),
              {"event": "done", "cases_ok": 1, "cases_failed": 0, "fraction": 1.0}]
    app, imported, message, _, nodes_before = _run_contract_engine(results, tmp_path, events, threshold="fpr5")
    assert imported is None
    assert "threshold val, not fpr5" in message and str(tmp_path / "out") in message
    assert app.scene.GetNumberOfNodes() == nodes_before
    # A number asked for: compared with the number the case was made with.
    app, imported, message, _, _ = _run_contract_engine(results, tmp_path / "number", events, threshold="0.7")
    assert imported is None and "not 0.7" in message


def test_a_case_the_engine_skipped_with_the_same_settings_is_imported_and_said_so(results, tmp_path):
    _, files, mask = results
    events = [{"event": "start", "protocol": 1, "command": "segment", "cases": 1},
              _case_done(files, skipped=True),
              {"event": "done", "cases_ok": 1, "cases_failed": 0, "fraction": 1.0}]
    _, imported, message, logs, _ = _run_contract_engine(results, tmp_path, events, threshold="val")
    assert message == "" and imported is not None and imported.reused
    assert any("finished earlier with the same settings" in line for line in logs), logs
    np.testing.assert_array_equal(
        SceneGlue.segmentMaskOnGridOf(imported.inputVolume, imported.segmentationNode, imported.segmentId), mask)
    assert imported.qcWarnings == [] and imported.findingsTable == []


def test_overlay_floor_moves_without_touching_the_segment(imported):
    _, result, _ = imported
    before = SceneGlue.segmentMaskOnGridOf(result.inputVolume, result.segmentationNode, result.segmentId)
    SceneGlue.showOverlayFloor(result.anomalyMapNode, 0.8)
    assert result.anomalyMapNode.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.8)
    np.testing.assert_array_equal(
        SceneGlue.segmentMaskOnGridOf(result.inputVolume, result.segmentationNode, result.segmentId), before)


def test_finding_records_become_rows_by_rank():
    """Records as ``Findings.records()`` gives them (flat rows, branch c-oppoint)."""
    from AnomalySegModuleLib.Findings import findingRowsFromRecords

    records = [{"rank": 2, "volume_ml": 0.5, "centroid_r_mm": 1.0, "centroid_a_mm": -2.0, "centroid_s_mm": 3.5,
                "max_score": 0.7},
               {"rank": 1, "volume_ml": 4.0, "centroid_r_mm": 10, "centroid_a_mm": 20, "centroid_s_mm": 30,
                "max_score": 0.9, "mean_score": 0.8}]
    rows = findingRowsFromRecords(records)
    assert [row.rank for row in rows] == [1, 2]
    assert rows[0].centroidRas == (10.0, 20.0, 30.0) and rows[1].cells() == ("2", "0.50", "1.0, -2.0, 3.5", "0.700")
    with pytest.raises(ValueError, match="not a number"):
        findingRowsFromRecords([{**records[0], "centroid_s_mm": "n/a"}])
