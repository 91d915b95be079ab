"""``anomalyseg preprocess`` and ``anomalyseg restore`` as a user runs them (a separate process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.preprocessing import ModelGrid, load_case, read_info
from AnomalySegLib.preprocessing.model_space import model_reference


def anomalyseg(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "AnomalySegLib", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)


def error_lines(stderr: str) -> list[str]:
    """The error messages: the batch's ``ERROR`` log lines and the CLI's own ``error:`` line."""
    return [line for line in stderr.splitlines() if line.startswith("ERROR") or ": error: " in line]


@pytest.fixture(scope="module")
def real_t1(real_data) -> sitk.Image:
    return sitk.ReadImage(str(real_data("itk_kmeans_t1")), sitk.sitkFloat32)  # 128×128×62, 2×2×3 mm


def write_bad_inputs(folder: Path, real_t1: sitk.Image) -> dict[str, str]:
    """Broken versions of a real scan; returns file name → the problem the error must name."""
    folder.mkdir()
    sitk.WriteImage(real_t1[:, :, 30], str(folder / "slice2d.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries([real_t1, real_t1]), str(folder / "series4d.nii.gz"))
    (folder / "empty.nii.gz").write_bytes(b"")
    sitk.WriteImage(real_t1, str(folder / "whole.nii"))
    data = (folder / "whole.nii").read_bytes()
    (folder / "truncated.nii").write_bytes(data[: len(data) // 2])
    (folder / "whole.nii").unlink()
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        array = sitk.GetArrayFromImage(real_t1)
        array[30, 60, 60] = value
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(real_t1)
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    sitk.WriteImage(real_t1 * 0, str(folder / "zeros.nii.gz"))
    return {"slice2d": "2 dimensions", "series4d": "4", "empty": "empty", "truncated": "truncated",
            "nan": "NaN or infinite", "inf": "NaN or infinite", "zeros": "all zero"}


@pytest.mark.slow
def test_bad_inputs_each_fail_with_one_line_naming_file_and_problem(tmp_path, real_t1):
    problems = write_bad_inputs(tmp_path / "bad", real_t1)
    out = tmp_path / "out"

    result = anomalyseg("preprocess", tmp_path / "bad", "-o", out, cwd=tmp_path)

    assert result.returncode != 0
    lines = error_lines(result.stderr)
    for case_id, problem in problems.items():
        mentions = [line for line in lines if f"{case_id}." in line and problem in line]
        assert len(mentions) == 1, f"{case_id}: expected one line naming '{problem}' in:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())  # no partial case folder, no temporary folder


@pytest.mark.slow
def test_single_bad_file_and_mask_on_another_grid(tmp_path, real_t1):
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(real_t1, str(scan))
    mask = tmp_path / "mask.nii.gz"
    sitk.WriteImage(sitk.Cast(real_t1[:, :, 1:] > 20, sitk.sitkUInt8), str(mask))  # one slice less
    out = tmp_path / "out"

    result = anomalyseg("preprocess", scan, "--mask", mask, "-o", out, cwd=tmp_path)

    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and str(mask) in lines[0] and "not on the grid" in lines[0], result.stderr
    assert not out.exists() or not any(out.iterdir())

    result = anomalyseg("preprocess", tmp_path / "missing.nii.gz", "-o", out, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"anomalyseg preprocess: error: {tmp_path / 'missing.nii.gz'}: does not exist"]

    spec = tmp_path / "spec.json"
    spec.write_text('{"version": 1, "percentiles": [99, 1]}')
    result = anomalyseg("preprocess", scan, "--spec", spec, "-o", out, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(spec) in lines[0] and "percentiles" in lines[0], result.stderr


@pytest.mark.slow
def test_preprocess_then_restore_round_trip(tmp_path, real_data):
    scan = real_data("mrbraintumor1")
    labels = real_data("mrbraintumor1_labels")
    out = tmp_path / "pre"

    result = anomalyseg("preprocess", scan, "--labels", labels, "--label-values", "9", "-o", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    case_folder = out / "mrbraintumor1"
    case = load_case(case_folder)
    assert case.image.shape == (50, 96, 96) and case.labels is not None and case.labels.sum() > 500
    assert read_info(case_folder)["info"]["source"]["label_values"] == [9]

    again = anomalyseg("preprocess", scan, "-o", out, cwd=tmp_path)
    assert again.returncode != 0 and "exists already" in again.stderr  # never overwritten silently

    restored_path = tmp_path / "tumour_native.nii.gz"
    result = anomalyseg("restore", case_folder / "labels.nii.gz", "--reference", scan, "--transform",
                        case_folder, "-o", restored_path, "--binary", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    restored = sitk.ReadImage(str(restored_path))
    reference = sitk.ReadImage(str(scan))
    assert restored.GetSize() == reference.GetSize()
    assert np.allclose(restored.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels))) == 9
    found = sitk.GetArrayFromImage(restored) > 0
    assert 2 * np.sum(found & truth) / (found.sum() + truth.sum()) >= 0.85

    result = anomalyseg("restore", case_folder / "image.nii.gz", "--reference", scan, "--transform",
                        tmp_path / "nowhere.tfm", "-o", tmp_path / "x.nii.gz", cwd=tmp_path)
    assert result.returncode != 0 and "nowhere.tfm" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "x.nii.gz").exists()


def test_restore_a_folder_of_maps_keeps_going_past_a_broken_case(tmp_path, real_data):
    maps, references, transforms = (tmp_path / name for name in ("maps", "refs", "tfms"))
    for folder in (maps, references, transforms):
        folder.mkdir()
    box = np.zeros(ModelGrid().array_shape, np.float32)
    box[20:30, 30:60, 30:60] = 1.0
    for case_id, source in (("good", "mrbraintumor1"), ("broken", "mrhead")):
        image = sitk.GetImageFromArray(box)
        image.CopyInformation(model_reference(ModelGrid()))
        sitk.WriteImage(image, str(maps / f"{case_id}.nii.gz"))
        sitk.WriteImage(sitk.ReadImage(str(real_data(source))), str(references / f"{case_id}.nii.gz"))
    sitk.WriteTransform(sitk.AffineTransform(3), str(transforms / "good.tfm"))
    (transforms / "broken.tfm").write_text("not a transform\n")
    out = tmp_path / "out"

    result = anomalyseg("restore", maps, "--reference", references, "--transform", transforms, "-o", out,
                        "--binary", cwd=tmp_path)

    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "broken.tfm" in lines[0] and "not a readable ITK transform" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz"]
    restored = sitk.ReadImage(str(out / "good.nii.gz"))
    reference = sitk.ReadImage(str(references / "good.nii.gz"))
    assert restored.GetSize() == reference.GetSize()
    box_ml = np.count_nonzero(sitk.GetArrayFromImage(restored)) * np.prod(reference.GetSpacing()) / 1000
    assert box_ml == pytest.approx(20 * 60 * 60 / 1000, rel=0.05)  # 10 × 30 × 30 voxels of 8 µl
