"""Segmentation files: our .seg.nrrd opens in real Slicer MRML (slicer-core, scene from
``Testing/slicer_scene.py``) with name, colour, terminology and geometry intact, and reads back into
the same label image."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk
from slicer_scene import build_scene
from vtk.util.numpy_support import vtk_to_numpy

from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.io import (
    ANOMALY_SEGMENT,
    ANOMALY_TERMINOLOGY,
    SegmentDescription,
    Terminology,
    read_segmentation,
    read_volume,
    write_segmentation,
)

ANOMALY_TAG = ("Segmentation category and type - 3D Slicer General Anatomy list"
               "~SCT^49755003^Morphologically Altered Structure~SCT^4147007^Mass~^^"
               "~Anatomic codes - DICOM master list~SCT^12738006^Brain~^^")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def tumour(real_data) -> sitk.Image:
    """Binary tumour mask of MRBrainTumor1 (value 9 of its label file), uint8, 256×256×112."""
    return sitk.Cast(read_volume(real_data("mrbraintumor1_labels")) == 9, sitk.sitkUInt8)


@pytest.fixture(scope="module")
def oblique_pir_tumour(tumour, real_data) -> sitk.Image:
    """The tumour mask on MRHead's PIR direction, rotated a further 15° and with uneven spacing."""
    image = sitk.Image(tumour)
    pir = np.array(read_volume(real_data("mrhead")).GetDirection()).reshape(3, 3)
    tilt = np.array(sitk.VersorTransform((0.0, 0.0, 1.0), np.deg2rad(15.0)).GetMatrix()).reshape(3, 3)
    image.SetDirection(tuple((tilt @ pir).ravel()))
    image.SetSpacing((0.9, 1.1, 1.3))
    image.SetOrigin((12.5, -40.25, 88.0))
    return image


@pytest.fixture
def mrml():
    """A real MRML scene with its logics (kept alive for the test: the application logic holds them weakly)."""
    return build_scene()


def load_in_slicer(path, scene):
    """Read ``path`` with vtkMRMLSegmentationStorageNode into a new vtkMRMLSegmentationNode of ``scene``."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    return node


def slicer_labelmap(segment):
    """The segment's binary labelmap: (voxels [k, j, i] bool, extent, IJK→RAS 4×4).

    Slicer shares one labelmap between segments of a layer: a segment is its label value in it.
    """
    labelmap = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    extent = labelmap.GetExtent()
    dims = [extent[2 * axis + 1] - extent[2 * axis] + 1 for axis in range(3)]
    voxels = vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1]) == segment.GetLabelValue()
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return voxels, extent, ijk_to_ras


def expected_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ matrix


@pytest.mark.parametrize("which", ["tumour", "oblique_pir_tumour"])
def test_seg_nrrd_loads_in_slicer_core(which, request, mrml, tmp_path):
    labels = request.getfixturevalue(which)
    path = write_segmentation(labels, tmp_path / "finding.seg.nrrd")
    node = load_in_slicer(path, mrml.scene)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == "Anomaly"
    np.testing.assert_allclose(segment.GetColor(), ANOMALY_SEGMENT.color)
    assert segment.GetTerminology() == ANOMALY_TAG == ANOMALY_TERMINOLOGY.to_string()

    voxels, extent, ijk_to_ras = slicer_labelmap(segment)
    expected = sitk.GetArrayViewFromImage(labels) > 0
    assert voxels.sum() == expected.sum() > 1000
    i0, i1, j0, j1, k0, k1 = extent
    np.testing.assert_array_equal(voxels, expected[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1])
    np.testing.assert_allclose(ijk_to_ras, expected_ijk_to_ras(labels), atol=1e-6)


def test_several_segments_and_an_empty_one(tumour, mrml, tmp_path):
    labels = sitk.Image(tumour)
    labels[100:110, 100:110, 50:55] = 2
    segments = [
        ANOMALY_SEGMENT,
        SegmentDescription("Oedema", (0.2, 0.6, 1.0), 2, None),
        SegmentDescription("Necrosis", (0.1, 0.1, 0.1), 3,
                           Terminology(("SCT", "49755003", "Morphologically Altered Structure"),
                                       ("SCT", "6574001", "Necrosis"))),
    ]
    path = write_segmentation(labels, tmp_path / "three.seg.nrrd", segments)
    node = load_in_slicer(path, mrml.scene)
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(n).GetName() for n in range(3)] == ["Anomaly", "Oedema", "Necrosis"]
    assert "SCT^4147007^Mass" not in segmentation.GetNthSegment(1).GetTerminology()
    assert "SCT^6574001^Necrosis" in segmentation.GetNthSegment(2).GetTerminology()
    oedema_voxels, _, _ = slicer_labelmap(segmentation.GetNthSegment(1))
    assert oedema_voxels.sum() == 500
    necrosis_voxels, _, _ = slicer_labelmap(segmentation.GetNthSegment(2))
    assert not necrosis_voxels.any()

    read_labels, read_segments = read_segmentation(path)
    assert read_segments == segments
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(read_labels), sitk.GetArrayViewFromImage(labels))


def test_read_back_keeps_geometry(oblique_pir_tumour, tmp_path):
    path = write_segmentation(oblique_pir_tumour, tmp_path / "oblique.seg.nrrd")
    labels, segments = read_segmentation(path)
    assert segments == [ANOMALY_SEGMENT]
    assert labels.GetSize() == oblique_pir_tumour.GetSize()
    np.testing.assert_allclose(labels.GetSpacing(), oblique_pir_tumour.GetSpacing(), rtol=1e-12)
    np.testing.assert_allclose(labels.GetOrigin(), oblique_pir_tumour.GetOrigin(), atol=1e-12)
    np.testing.assert_allclose(labels.GetDirection(), oblique_pir_tumour.GetDirection(), atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(oblique_pir_tumour))


def test_reads_slicer_written_layered_segmentation(tumour, mrml, tmp_path):
    """Overlapping segments saved by Slicer (4D layers) come back as one label image, later wins."""
    scene = mrml.scene
    node = load_in_slicer(write_segmentation(tumour, tmp_path / "a.seg.nrrd"), scene)
    segmentation = node.GetSegmentation()
    overlap = sitk.Image(tumour)
    overlap[120:140, 80:120, 60:80] = 1  # overlaps the tumour (extent 113–148 × 77–117 × 64–87)
    other = load_in_slicer(write_segmentation(overlap, tmp_path / "b.seg.nrrd"), scene)
    segmentation.CopySegmentFromSegmentation(other.GetSegmentation(), other.GetSegmentation().GetNthSegmentID(0))
    segmentation.GetNthSegment(1).SetName("Overlap")
    storage = node.CreateDefaultStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "slicer.seg.nrrd"))
    assert storage.WriteData(node) == 1

    labels, segments = read_segmentation(tmp_path / "slicer.seg.nrrd")
    assert [s.name for s in segments] == ["Anomaly", "Overlap"]
    assert [s.label_value for s in segments] == [1, 2]
    values = sitk.GetArrayViewFromImage(labels)
    overlap_voxels = sitk.GetArrayViewFromImage(overlap) > 0
    assert np.count_nonzero(values == 2) == np.count_nonzero(overlap_voxels)
    tumour_only = (sitk.GetArrayViewFromImage(tumour) > 0) & ~overlap_voxels
    assert np.count_nonzero(values == 1) == np.count_nonzero(tumour_only)


def test_refuses_overwrite_wrong_name_and_undescribed_labels(tumour, tmp_path):
    path = write_segmentation(tumour, tmp_path / "finding.seg.nrrd")
    with pytest.raises(OutputExistsError):
        write_segmentation(tumour, path)
    with pytest.raises(InputError, match="must end in .seg.nrrd"):
        write_segmentation(tumour, tmp_path / "finding.nrrd")
    with pytest.raises(ValueError, match=r"values \[2\] that no segment describes"):
        write_segmentation(tumour * 2, tmp_path / "other.seg.nrrd")
    assert [p.name for p in tmp_path.iterdir()] == ["finding.seg.nrrd"]


def test_unreadable_segmentation(tmp_path):
    path = tmp_path / "broken.seg.nrrd"
    path.write_text("NRRD0004\ntype: what\n\n")
    with pytest.raises(InputError, match="broken.seg.nrrd: is not a readable segmentation"):
        read_segmentation(path)
