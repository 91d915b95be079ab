"""The on-disk layout of one preprocessed case, shared by ``preprocess``, training and evaluation.

A preprocessed dataset is a folder with one sub-folder per case::

    <root>/<case_id>/image.nii.gz          float32, model grid (default 96×96×50 voxels of 2 mm), in [0, 1]
    <root>/<case_id>/mask.nii.gz           uint8 brain mask (0/1), same grid
    <root>/<case_id>/labels.nii.gz         uint8 anomaly ground truth (0/1), same grid; optional
    <root>/<case_id>/transform.tfm         affine between native and model space (ITK transform file)
    <root>/<case_id>/preprocessing.json    the spec used and what each step did (e.g. mask source)

Arrays are returned as SimpleITK gives them, ``[Z, Y, X]``: ``array[z]`` is one axial slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.errors import InputError

IMAGE_FILE = "image.nii.gz"
MASK_FILE = "mask.nii.gz"
LABELS_FILE = "labels.nii.gz"
TRANSFORM_FILE = "transform.tfm"
INFO_FILE = "preprocessing.json"


@dataclass(frozen=True)
class ModelSpaceCase:
    """One preprocessed case as arrays ``[Z, Y, X]`` (default ``[50, 96, 96]``)."""

    case_id: str
    image: np.ndarray  # float32 in [0, 1]
    mask: np.ndarray  # bool
    labels: np.ndarray | None  # bool, or None when the case has no ground truth


def list_cases(root: str | Path) -> list[Path]:
    """Case folders under ``root`` (those holding an image), sorted by name.

    Raises:
        InputError: ``root`` is not a folder or holds no preprocessed case.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "is not a folder of preprocessed cases")
    cases = sorted(p for p in root.iterdir() if (p / IMAGE_FILE).is_file())
    if not cases:
        raise InputError(root, f"holds no preprocessed case (no */{IMAGE_FILE}); run 'anomalyseg preprocess'")
    return cases


def load_case(folder: str | Path) -> ModelSpaceCase:
    """Read one case folder written by ``anomalyseg preprocess``."""
    folder = Path(folder)
    image = _read_array(folder / IMAGE_FILE).astype(np.float32)
    mask = _read_array(folder / MASK_FILE) > 0
    labels_path = folder / LABELS_FILE
    labels = _read_array(labels_path) > 0 if labels_path.is_file() else None
    for name, array in (("mask", mask), ("labels", labels)):
        if array is not None and array.shape != image.shape:
            raise InputError(folder, f"{name} grid {array.shape} differs from image grid {image.shape}")
    return ModelSpaceCase(case_id=folder.name, image=image, mask=mask, labels=labels)


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "missing from the preprocessed case folder")
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as error:
        raise InputError(path, f"cannot be read ({str(error).strip().splitlines()[-1]})") from error
