"""The on-disk layout of one preprocessed case, shared by ``preprocess``, training and evaluation.

A preprocessed dataset is a folder with one sub-folder per case::

    <root>/<case_id>/image.nii.gz          float32, model grid (default 96×96×50 voxels of 2 mm), in [0, 1]
    <root>/<case_id>/mask.nii.gz           uint8 brain mask (0/1), same grid
    <root>/<case_id>/labels.nii.gz         uint8 anomaly ground truth (0/1), same grid; optional
    <root>/<case_id>/transform.tfm         affine between native and model space (ITK transform file)
    <root>/<case_id>/preprocessing.json    the spec used and what each step did (e.g. mask source)

Arrays are returned as SimpleITK gives them, ``[Z, Y, X]``: ``array[z]`` is one axial slice.
:func:`write_case` writes a whole case folder atomically (a temporary sibling folder renamed into
place), so a failure never leaves a half-written case behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from AnomalySegLib.errors import InputError
from AnomalySegLib.io.atomic import atomic_folder

if TYPE_CHECKING:
    import SimpleITK as sitk

    from AnomalySegLib.preprocessing.pipeline import PreprocessedCase

IMAGE_FILE = "image.nii.gz"
MASK_FILE = "mask.nii.gz"
LABELS_FILE = "labels.nii.gz"
TRANSFORM_FILE = "transform.tfm"
INFO_FILE = "preprocessing.json"

LOG = logging.getLogger(__name__)


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


def load_case_folder(root: str | Path, need_labels: bool) -> list[ModelSpaceCase]:
    """Every preprocessed case under ``root``; with ``need_labels`` each must have ``labels.nii.gz``.

    Raises:
        InputError: no case under ``root``, an unreadable case, or (``need_labels``) a case without labels.
    """
    cases = []
    for folder in list_cases(root):
        case = load_case(folder)
        if need_labels and case.labels is None:
            raise InputError(
                folder, f"has no {LABELS_FILE}; preprocess labelled cases with 'anomalyseg preprocess --labels'"
            )
        if need_labels and not np.any(case.labels):
            LOG.warning("%s: labels are empty (a healthy case among the labelled ones)", folder)
        cases.append(case)
    return cases


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "missing from the preprocessed case folder")
    import SimpleITK as sitk  # here, not at the top: training from arrays (scripts/gpu_check.py) needs no SimpleITK

    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as error:
        raise InputError(path, f"cannot be read ({str(error).strip().splitlines()[-1]})") from error


def read_transform(path: str | Path) -> sitk.Transform:
    """The native ↔ model transform stored by :func:`write_case` (template → native points).

    Raises:
        InputError: missing or not an ITK transform file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist (expected an ITK transform file written by 'anomalyseg preprocess')")
    import SimpleITK as sitk

    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as error:
        raise InputError(path, "is not a readable ITK transform file") from error


def read_info(folder: str | Path) -> dict[str, Any]:
    """The ``preprocessing.json`` of a case folder: ``{"spec": {...}, "info": {...}}``."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise InputError(path, "missing from the preprocessed case folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"is not valid JSON ({error})") from error


def recorded_preprocessing(folder: str | Path) -> dict[str, Any]:
    """The preprocessing spec that ``anomalyseg preprocess`` recorded for a case (``{}`` if none)."""
    if not (Path(folder) / INFO_FILE).is_file():
        return {}
    info = read_info(folder)
    return info.get("spec", info) if isinstance(info, dict) else {}


def write_case(case: "PreprocessedCase", folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``case`` as the case folder ``folder`` (layout above), all or nothing.

    The files are written into a temporary sibling folder that is renamed onto ``folder`` when
    complete; an existing ``folder`` is replaced only with ``overwrite`` (and only after the new one
    is complete).

    Raises:
        OutputExistsError: ``folder`` exists and ``overwrite`` is false.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    with atomic_folder(folder, overwrite) as temp:
        sitk.WriteImage(sitk.Cast(case.image, sitk.sitkFloat32), str(temp / IMAGE_FILE), True)
        sitk.WriteImage(sitk.Cast(case.mask, sitk.sitkUInt8), str(temp / MASK_FILE), True)
        if case.labels is not None:
            sitk.WriteImage(sitk.Cast(case.labels, sitk.sitkUInt8), str(temp / LABELS_FILE), True)
        sitk.WriteTransform(case.transform, str(temp / TRANSFORM_FILE))
        document = {"spec": case.spec.to_dict(), "info": case.info}
        (temp / INFO_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return folder
