"""Volume files: every format round-trips real MRI with identical geometry and voxels; atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.io import read_volume, strip_volume_suffix, volume_suffix, write_volume

# NIfTI keeps geometry as 32-bit floats; NRRD and MetaImage as decimal text of doubles (full precision).
FLOAT32_FORMATS = {".nii", ".nii.gz"}


@pytest.fixture(scope="module")
def tumour_crop(real_data) -> sitk.Image:
    """A 64×64×24 int16 crop of MRBrainTumor1 (keeps its real geometry, shifted origin)."""
    image = read_volume(real_data("mrbraintumor1"))
    return image[96:160, 96:160, 40:64]


def oblique(image: sitk.Image) -> sitk.Image:
    """``image`` with a rotated direction (20° about (1, 2, 3)), uneven spacing and an odd origin."""
    axis = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
    rotation = sitk.VersorTransform(tuple(axis), np.deg2rad(20.0)).GetMatrix()
    result = sitk.Image(image)
    result.SetDirection(rotation)
    result.SetSpacing((0.8123, 1.1, 1.7777))
    result.SetOrigin((-101.234567, 37.5, 12.0625))
    return result


def assert_same_volume(actual: sitk.Image, expected: sitk.Image, suffix: str) -> None:
    assert actual.GetSize() == expected.GetSize()
    assert actual.GetPixelID() == expected.GetPixelID()
    # NRRD stores direction × spacing, so direction and spacing come back to the last bits of a double.
    relative, millimetres, cosine = (1e-6, 2e-5, 1e-6) if suffix in FLOAT32_FORMATS else (1e-13, 1e-12, 1e-13)
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), rtol=relative, atol=0)
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), rtol=0, atol=millimetres)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), rtol=0, atol=cosine)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(actual), sitk.GetArrayViewFromImage(expected))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_round_trip_of_real_volume(tumour_crop, tmp_path, suffix):
    path = write_volume(tumour_crop, tmp_path / f"crop{suffix}")
    assert_same_volume(read_volume(path), tumour_crop, suffix)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"crop{suffix}"]  # no temporary file left


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_oblique_direction_round_trips(tumour_crop, tmp_path, suffix):
    image = oblique(tumour_crop)
    assert_same_volume(read_volume(write_volume(image, tmp_path / f"oblique{suffix}")), image, suffix)


def test_float_pixels_round_trip(tumour_crop, tmp_path):
    image = sitk.Cast(tumour_crop, sitk.sitkFloat32) / 7.0
    assert_same_volume(read_volume(write_volume(image, tmp_path / "scaled.nii.gz")), image, ".nii.gz")


def test_mrhead_keeps_its_pir_orientation(real_data, tmp_path):
    image = read_volume(real_data("mrhead"))
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection()) == "PIR"
    for suffix in (".nrrd", ".nii.gz"):
        copy = read_volume(write_volume(image, tmp_path / f"mrhead{suffix}"))
        assert_same_volume(copy, image, suffix)
        assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(copy.GetDirection()) == "PIR"


def test_detached_header_formats_are_read(tumour_crop, tmp_path):
    for suffix in (".mhd", ".nhdr"):
        path = tmp_path / f"detached{suffix}"
        sitk.WriteImage(tumour_crop, str(path))
        assert_same_volume(read_volume(path), tumour_crop, suffix)


def write_dicom_series(image: sitk.Image, folder: Path, series_uid: str, description: str = "T1") -> None:
    """Write a scalar int16 volume as one DICOM MR file per slice, with each slice's position.

    SimpleITK's ImageSeriesWriter refuses DICOM ("does not support writing a DICOM series"), so this
    follows SimpleITK's DICOM series example: one ImageFileWriter call per slice with its tags.
    """
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = "\\".join(f"{value:.12g}" for value in (*direction[0::3], *direction[1::3]))
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
            "0008|0018": f"{series_uid}.{k + 1}",
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{value:.12g}" for value in position),
            "0020|0037": orientation,
            "0018|0050": f"{image.GetSpacing()[2]:.12g}",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_folder_round_trips(tumour_crop, tmp_path):
    image = oblique(tumour_crop)
    write_dicom_series(image, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.2")
    read = read_volume(tmp_path / "series")
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(read), sitk.GetArrayViewFromImage(image))


def test_dicom_folder_with_two_series_reads_the_larger(tumour_crop, tmp_path):
    folder = tmp_path / "mixed"
    write_dicom_series(tumour_crop[:, :, :9], folder / "scout_tmp", "1.2.826.0.1.3680043.2.1125.3", "scout")
    write_dicom_series(tumour_crop, folder / "t1_tmp", "1.2.826.0.1.3680043.2.1125.4")
    for sub in ("scout_tmp", "t1_tmp"):  # both series side by side in one folder
        for file in (folder / sub).iterdir():
            file.rename(folder / f"{sub}_{file.name}")
        (folder / sub).rmdir()
    assert read_volume(folder).GetSize() == tumour_crop.GetSize()


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="holds no DICOM series"):
        read_volume(tmp_path)


def test_no_silent_overwrite(tumour_crop, tmp_path):
    path = write_volume(tumour_crop, tmp_path / "out.nrrd")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="out.nrrd"):
        write_volume(tumour_crop * 2, path)
    assert path.read_bytes() == before
    write_volume(tumour_crop * 2, path, overwrite=True)
    # GetArrayFromImage (a copy): a view of the temporary image would read freed memory once it is collected
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(path)),
                                  2 * sitk.GetArrayViewFromImage(tumour_crop))


def test_unsupported_output_type_is_refused(tumour_crop, tmp_path):
    with pytest.raises(InputError, match="output type"):
        write_volume(tumour_crop, tmp_path / "out.png")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("name", "suffix", "stem"), [
    ("scan.nii.gz", ".nii.gz", "scan"), ("Scan.NII", ".nii", "Scan"), ("a.b.nrrd", ".nrrd", "a.b"),
    ("x.mha", ".mha", "x"), ("notes.txt", None, "notes.txt"),
])
def test_volume_suffixes(name, suffix, stem):
    assert volume_suffix(name) == suffix
    assert strip_volume_suffix(name) == stem
