"""Bad input files give one clear InputError naming the file and the problem; failed writes leave nothing.

Every bad file here is made from a real scan (MRBrainTumor1 or the ITK k-means brain T1 and mask).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.io import atomic_output, atomic_write_text, read_volume, validate_mask, validate_volume, write_volume


@pytest.fixture(scope="module")
def scan(real_data) -> sitk.Image:
    """The ITK example brain T1 (128×128×62 int16, 2×2×3 mm)."""
    return read_volume(real_data("itk_kmeans_t1"))


@pytest.fixture(scope="module")
def brain_mask(real_data) -> sitk.Image:
    return read_volume(real_data("itk_kmeans_brain_labels"))


def load_and_validate(path: Path) -> None:
    validate_volume(read_volume(path), path)


def assert_input_error(path: Path, *phrases: str):
    """Reading and validating ``path`` raises one InputError naming the file and all ``phrases``."""
    with pytest.raises(InputError) as caught:
        load_and_validate(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message
    return message


def test_valid_real_scan_passes(real_data, scan, brain_mask):
    validate_volume(scan, "t1.nii.gz")
    validate_mask(brain_mask, scan, "mask.nii.gz")
    load_and_validate(real_data("mrbraintumor1"))


def test_2d_image(scan, tmp_path):
    path = write_volume(scan[:, :, 30], tmp_path / "slice.nii.gz")
    assert_input_error(path, "has 2 dimensions", "3D volume is needed")


def test_4d_image(scan, tmp_path):
    array = sitk.GetArrayFromImage(scan).transpose(2, 1, 0)  # nibabel order [i, j, k]
    series = np.stack([array, array + 1, array + 2], axis=-1)
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(series, np.diag([2.0, 2.0, 3.0, 1.0])), path)
    assert_input_error(path, "has 4 dimensions (4D series of 3 volumes)")


def test_vector_image(scan, tmp_path):
    path = write_volume(sitk.Compose(scan, scan, scan), tmp_path / "rgb.nrrd")
    assert_input_error(path, "3 components per voxel")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    assert_input_error(path, "is empty")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file(scan, tmp_path, suffix):
    whole = write_volume(scan, tmp_path / f"whole{suffix}").read_bytes()
    path = tmp_path / f"truncated{suffix}"
    path.write_bytes(whole[: int(len(whole) * 0.8)])
    assert_input_error(path, "truncated")


def test_unsupported_type_and_missing_file(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff" + bytes(100))
    assert_input_error(path, "unsupported file type")
    assert_input_error(tmp_path / "absent.nii.gz", "does not exist")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_nan_and_inf_voxels(scan, tmp_path, suffix):
    array = sitk.GetArrayFromImage(scan).astype(np.float32)
    array[30, 60, 60:64] = np.nan
    array[31, 60, 60] = np.inf
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(scan)
    path = write_volume(image, tmp_path / f"nan{suffix}")
    assert_input_error(path, "5 NaN or infinite voxels")  # ITK alone would read NIfTI NaN as 0


def test_all_zero_and_constant_volumes(scan, tmp_path):
    assert_input_error(write_volume(scan * 0, tmp_path / "zero.nii.gz"), "all zero")
    assert_input_error(write_volume(scan * 0 + 7, tmp_path / "flat.nii.gz"), "same intensity (7)")


def test_absurd_spacing_and_tiny_size(scan, tmp_path):
    coarse = sitk.Image(scan)
    coarse.SetSpacing((2.0, 2.0, 25.0))
    assert_input_error(write_volume(coarse, tmp_path / "coarse.nrrd"), "spacing (2, 2, 25) mm")
    assert_input_error(write_volume(scan[:, :, :5], tmp_path / "thin.nrrd"), "only 128×128×5 voxels")


def mask_error(mask: sitk.Image, scan: sitk.Image) -> str:
    with pytest.raises(InputError) as caught:
        validate_mask(mask, scan, "brain_mask.nii.gz", "t1.nii.gz")
    message = str(caught.value)
    assert message.startswith("brain_mask.nii.gz: ") and "\n" not in message
    return message


def test_mismatched_masks(real_data, scan, brain_mask):
    other_scan_mask = read_volume(real_data("mrbraintumor1_labels")) > 0
    message = mask_error(other_scan_mask, scan)
    assert "not on the grid of the image t1.nii.gz" in message
    assert "size 256×256×112 vs 128×128×62" in message and "spacing" in message

    shifted = sitk.Image(brain_mask)
    shifted.SetOrigin(tuple(np.array(brain_mask.GetOrigin()) + (0.0, 1.5, 0.0)))
    message = mask_error(shifted, scan)
    assert "origin" in message and "size" not in message and "spacing" not in message


def test_unusable_mask_values(scan, brain_mask):
    assert "is empty" in mask_error(brain_mask * 0, scan)
    fractional = sitk.Cast(brain_mask > 0, sitk.sitkFloat32) * 0.3
    assert "non-integer values (e.g. 0.3)" in mask_error(fractional, scan)
    negative = sitk.Cast(brain_mask, sitk.sitkInt16) - 1
    assert "negative values" in mask_error(negative, scan)
    validate_mask(brain_mask * 3, scan, "labels.nii.gz")  # a label map (> 0 = brain) is fine


def test_failing_writer_leaves_no_file(tmp_path):
    target = tmp_path / "result.nii.gz"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_output(target) as temp_path:
            assert temp_path.parent == tmp_path and temp_path.name.endswith(".nii.gz")
            temp_path.write_bytes(b"half a file")
            raise RuntimeError("disk full")
    assert not any(tmp_path.iterdir())


def test_failing_itk_writer_keeps_existing_target(scan, tmp_path):
    target = write_volume(scan, tmp_path / "result.nrrd")
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_volume(sitk.GetArrayFromImage(scan), target, overwrite=True)  # not an image: ITK refuses
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.nrrd"]


def test_atomic_text_refuses_overwrite(tmp_path):
    path = atomic_write_text(tmp_path / "report.json", "{}")
    with pytest.raises(OutputExistsError, match="report.json: exists already"):
        atomic_write_text(path, '{"a": 1}')
    assert path.read_text(encoding="utf-8") == "{}"
    atomic_write_text(path, '{"a": 1}', overwrite=True)
    assert path.read_text(encoding="utf-8") == '{"a": 1}'
