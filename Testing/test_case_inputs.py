"""Input discovery: single scans, folders of scans and DICOM series, list files, duplicate ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import SimpleITK as sitk
from test_volume_io import write_dicom_series

from AnomalySegLib.errors import InputError
from AnomalySegLib.io import CaseInput, discover_cases, read_volume, write_segmentation, write_volume


@pytest.fixture(scope="module")
def crop(real_data) -> sitk.Image:
    """A 32×32×12 crop of the ITK example brain T1."""
    return read_volume(real_data("itk_kmeans_t1"))[48:80, 48:80, 25:37]


@pytest.fixture
def mixed_folder(crop, tmp_path) -> Path:
    """Volume files of several types, a DICOM sub-folder, and things that are not cases."""
    folder = tmp_path / "scans"
    write_volume(crop, folder / "b.nii.gz")
    write_volume(crop, folder / "a.nrrd")
    sitk.WriteImage(crop, str(folder / "c.mhd"))  # detached header + c.raw
    write_volume(crop, folder / ".hidden.nii.gz")
    write_segmentation(crop > 1000, folder / "old_result.seg.nrrd")
    (folder / "notes.txt").write_text("not a case")
    (folder / "empty_dir").mkdir()
    write_dicom_series(crop, folder / "patient7", "1.2.826.0.1.3680043.2.1125.7")
    return folder


def test_single_volume_file(crop, tmp_path):
    path = write_volume(crop, tmp_path / "scan.nii.gz")
    assert discover_cases(path) == [CaseInput("scan", path)]


def test_folder_of_cases(mixed_folder):
    cases = discover_cases(mixed_folder)
    assert [case.case_id for case in cases] == ["a", "b", "c", "patient7"]
    assert [case.path.name for case in cases] == ["a.nrrd", "b.nii.gz", "c.mhd", "patient7"]
    for case in cases:  # every discovered case is readable as the same volume
        assert read_volume(case.path).GetSize() == (32, 32, 12)


def test_dicom_series_folder_given_directly(mixed_folder):
    assert discover_cases(mixed_folder / "patient7") == [CaseInput("patient7", mixed_folder / "patient7")]


def test_list_file(mixed_folder, tmp_path):
    list_file = tmp_path / "lists" / "cohort.txt"
    list_file.parent.mkdir()
    list_file.write_text(
        "# cohort 1\n"
        "\n"
        "../scans/b.nii.gz\n"
        f"  {mixed_folder / 'a.nrrd'}  \n"
        "../scans/patient7\n"
    )
    cases = discover_cases(list_file)
    assert [case.case_id for case in cases] == ["b", "a", "patient7"]
    assert cases[0].path.resolve() == (mixed_folder / "b.nii.gz").resolve()
    assert cases[1].path == mixed_folder / "a.nrrd"


def test_list_file_with_missing_entry(mixed_folder, tmp_path):
    list_file = tmp_path / "cohort.txt"
    list_file.write_text(f"{mixed_folder / 'a.nrrd'}\n# comment\nscans/zzz.nii.gz\n")
    with pytest.raises(InputError, match=r"cohort.txt: line 3: scans/zzz.nii.gz does not exist"):
        discover_cases(list_file)
    list_file.write_text(f"{mixed_folder / 'empty_dir'}\n")
    with pytest.raises(InputError, match="line 1: .*empty_dir is a folder without a DICOM series"):
        discover_cases(list_file)
    list_file.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="lists no input"):
        discover_cases(list_file)


def test_duplicate_case_ids(crop, tmp_path):
    write_volume(crop, tmp_path / "scan.nii.gz")
    write_volume(crop, tmp_path / "Scan.nrrd")
    with pytest.raises(InputError, match="two inputs get the case id 'scan'.*rename one"):
        discover_cases(tmp_path)


def test_missing_unsupported_and_empty_inputs(crop, mixed_folder, tmp_path):
    with pytest.raises(InputError, match="absent.nii.gz: does not exist"):
        discover_cases(tmp_path / "absent.nii.gz")
    with pytest.raises(InputError, match="c.raw: is not a supported input"):
        discover_cases(mixed_folder / "c.raw")
    with pytest.raises(InputError, match="empty_dir: holds no volume file"):
        discover_cases(mixed_folder / "empty_dir")
    write_volume(crop, mixed_folder / "patient7" / "extra.nii.gz")
    with pytest.raises(InputError, match="patient7: holds both a DICOM series and volume files"):
        discover_cases(mixed_folder / "patient7")
