"""Dataset layouts, seeded splits and ``prepare-dataset`` on fake dataset trees made of real volumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.cli import main
from AnomalySegLib.datasets import get_layout, make_splits
from AnomalySegLib.errors import InputError
from AnomalySegLib.preprocessing.case_folder import IMAGE_FILE, LABELS_FILE, MASK_FILE, list_cases, load_case

# Relative paths of (image, labels) in each dataset's published layout; None = healthy dataset.
TREES = {
    "ixi": [("IXI-T1/IXI002-Guys-0828-T1.nii.gz", None), ("IXI-T1/IXI012-HH-1211-T1.nii.gz", None)],
    "ixi-t2": [("IXI-T2/IXI002-Guys-0828-T2.nii.gz", None)],
    "brats21": [("BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_t1.nii.gz",
                 "BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_seg.nii.gz"),
                ("BraTS2021_Training_Data/BraTS2021_00002/BraTS2021_00002_t1.nii.gz",
                 "BraTS2021_Training_Data/BraTS2021_00002/BraTS2021_00002_seg.nii.gz")],
    "atlas2": [("ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz",
                "ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/"
                "sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz")],
    "mslub": [("patient01/raw/patient01_T1W.nii.gz", "patient01/raw/patient01_consensus_gt.nii.gz")],
    "wmh": [("training/Utrecht/0/pre/T1.nii.gz", "training/Utrecht/0/wmh.nii.gz"),
            ("training/Amsterdam/GE3T/100/pre/T1.nii.gz", "training/Amsterdam/GE3T/100/wmh.nii.gz")],
}
# Files a dataset also holds that must not be taken for T1 images.
DISTRACTORS = {
    "ixi": ["IXI-T2/IXI002-Guys-0828-T2.nii.gz"],
    "brats21": ["BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz",
                "BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_flair.nii.gz"],
    "mslub": ["patient01/raw/patient01_T1WKS.nii.gz", "patient01/raw/patient01_FLAIR.nii.gz"],
    "wmh": ["training/Utrecht/0/pre/FLAIR.nii.gz", "training/Utrecht/0/orig/T1.nii.gz"],
}


def build_tree(root: Path, name: str, image: Path, labels: Path) -> Path:
    """The dataset ``name``'s layout under ``root`` with copies of the real ``image`` / ``labels`` files."""
    for image_path, labels_path in TREES[name]:
        for relative, source in ((image_path, image), (labels_path, labels)):
            if relative is not None:
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, root / relative)
    for relative in DISTRACTORS.get(name, []):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, root / relative)
    return root


@pytest.fixture(scope="module")
def small_volume(real_data) -> tuple[Path, Path]:
    return real_data("itk_kmeans_t1"), real_data("itk_kmeans_brain_labels")


@pytest.mark.parametrize("name", sorted(TREES))
def test_discovery_in_published_layout(name, tmp_path, small_volume):
    root = build_tree(tmp_path / name, name, *small_volume)
    found = get_layout(name).discover(root)
    assert {f.image for f in found} == {root / image for image, _ in TREES[name]}  # no distractor
    assert [f.case_id for f in found] == sorted(f.case_id for f in found)
    for files in found:
        expected = dict(TREES[name])[files.image.relative_to(root).as_posix()]
        assert files.labels == (None if expected is None else root / expected)
        assert "/" not in files.case_id
    if name == "wmh":
        assert [f.case_id for f in found] == ["Amsterdam_GE3T_100", "Utrecht_0"]
    if name == "brats21":
        assert [f.case_id for f in found] == ["BraTS2021_00000", "BraTS2021_00002"]


def test_discovery_errors_name_the_file(tmp_path, small_volume):
    root = build_tree(tmp_path / "brats", "brats21", *small_volume)
    missing = root / TREES["brats21"][1][1]
    missing.unlink()
    with pytest.raises(InputError, match="BraTS2021_00002_seg.nii.gz: missing"):
        get_layout("brats21").discover(root)
    with pytest.raises(InputError, match="holds no ixi T1 image"):
        get_layout("ixi").discover(root)
    with pytest.raises(InputError, match="unknown dataset 'oasis'"):
        get_layout("oasis")


def test_splits_are_seeded_disjoint_and_cover_every_case():
    ids = [f"case{i:03d}" for i in range(103)]
    splits = make_splits(ids, folds=5, seed=7)
    assert splits == make_splits(list(reversed(ids)), folds=5, seed=7)  # order of discovery does not matter
    assert splits != make_splits(ids, folds=5, seed=8)
    tests = [case for fold in splits["folds"] for case in fold["test"]]
    assert sorted(tests) == ids  # each case is tested exactly once
    for fold in splits["folds"]:
        train, val, test = set(fold["train"]), set(fold["val"]), set(fold["test"])
        assert len(test) in (20, 21) and not (train & val or train & test or val & test)
        assert train | val | test == set(ids)
        assert len(val) == round(0.1 * (103 - len(test)))
        labelled = set(fold["labelled_train"]) | set(fold["labelled_val"])
        assert labelled <= train and len(labelled) == 10 and len(fold["labelled_val"]) == 1
    with pytest.raises(InputError, match="3 cases cannot make 5 folds"):
        make_splits(ids[:3])


def _write_model_space_case(folder: Path, image: np.ndarray, mask: np.ndarray) -> None:
    folder.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / IMAGE_FILE))
    sitk.WriteImage(sitk.GetImageFromArray(mask.astype(np.uint8)), str(folder / MASK_FILE))


@pytest.mark.slow
def test_prepare_dataset_preprocesses_resumes_and_keeps_going(tmp_path, small_volume, healthy_cases, capsys):
    """A fake ATLAS v2 tree: one case to preprocess, one prepared before (kept), one unreadable (fails)."""
    image, labels = small_volume
    root = build_tree(tmp_path / "atlas", "atlas2", image, labels)
    broken = root / "ATLAS_2/Training/R001/sub-r001s002/ses-1/anat"
    broken.mkdir(parents=True)
    (broken / "sub-r001s002_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz").write_bytes(b"not a nifti")
    (broken / "sub-r001s002_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz").write_bytes(b"x")
    kept = root / "ATLAS_2/Training/R001/sub-r001s003/ses-1/anat"
    kept.mkdir(parents=True)
    shutil.copyfile(image, kept / "sub-r001s003_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz")
    shutil.copyfile(labels, kept / "sub-r001s003_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz")
    out = tmp_path / "prepared"
    _write_model_space_case(out / "cases" / "sub-r001s003", healthy_cases[0].image, healthy_cases[0].mask)

    status = main(["prepare-dataset", "atlas2", str(root), "-o", str(out), "--folds", "2"])
    assert status == 1  # one case failed; the others were done
    assert "1 cases prepared, 1 kept, 1 failed" in capsys.readouterr().out
    assert [p.name for p in list_cases(out / "cases")] == ["sub-r001s001", "sub-r001s003"]
    case = load_case(out / "cases" / "sub-r001s001")
    assert case.image.shape == (50, 96, 96) and case.labels is not None and case.labels.any()
    assert not (out / "cases" / "sub-r001s003" / LABELS_FILE).exists()  # kept as it was
    splits = json.loads((out / "splits.json").read_text(encoding="utf-8"))
    assert splits["dataset"] == "atlas2" and splits["cases"] == ["sub-r001s001", "sub-r001s003"]
    assert sorted(c for fold in splits["folds"] for c in fold["test"]) == splits["cases"]
    dataset = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert dataset["failed"] == ["sub-r001s002"]

    # Re-running with another seed would change splits.json: refused without --overwrite.
    assert main(["prepare-dataset", "atlas2", str(root), "-o", str(out), "--folds", "2", "--seed", "1"]) == 2
    assert json.loads((out / "splits.json").read_text(encoding="utf-8")) == splits
