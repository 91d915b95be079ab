"""Metrics on the native grid: the combined anomaly map restored onto the original scan, against the
original label map (what a user sees in Slicer; the paper's protocol uses the model grid).

Needs a case folder written by ``anomalyseg preprocess --labels`` (or ``prepare-dataset``): its
``preprocessing.json`` names the source image, label file and label values, ``transform.tfm`` the way back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.errors import InputError
from AnomalySegLib.io.volume_io import read_volume
from AnomalySegLib.metrics import auprc, best_dice, dice
from AnomalySegLib.preprocessing.case_folder import TRANSFORM_FILE, read_info, read_transform
from AnomalySegLib.preprocessing.restore import restore_to_native
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.scoring.operating_point import RAW, CleanUp, apply_operating_point, voxel_size_zyx


def native_metrics(folder: str | Path, anomaly_score: np.ndarray, threshold: float | None,
                   clean_up: CleanUp = RAW) -> dict[str, float]:
    """``native_best_dice``, ``native_auprc`` and (with a threshold) ``native_dice`` of one case.

    Args:
        folder: the preprocessed case folder.
        anomaly_score: AS ``[Z, Y, X]`` on the case's model grid.
        threshold: the threshold of AS (``None``: no ``native_dice``).
        clean_up: the operating point's clean-up, applied on the native grid as ``segment`` does.

    Raises:
        InputError: the folder does not name its source image and labels, or they cannot be read.
    """
    folder = Path(folder)
    document = read_info(folder)
    source = document.get("info", {}).get("source", {})
    if not source.get("image") or not source.get("labels"):
        raise InputError(folder / "preprocessing.json", "names no source image and labels (needed for --native)")
    spec = PreprocessingSpec.from_dict(document["spec"])
    reference = read_volume(source["image"])
    labels = sitk.GetArrayFromImage(read_volume(source["labels"]))
    values = source.get("label_values")
    truth = np.isin(labels, values) if values else labels > 0
    transform = read_transform(folder / TRANSFORM_FILE)
    restored = sitk.GetArrayFromImage(restore_to_native(anomaly_score, reference, transform, "continuous", spec.grid))
    if restored.shape != truth.shape:
        raise InputError(source["labels"], f"grid {truth.shape} differs from the image's {restored.shape}")
    result = {"native_best_dice": best_dice(restored, truth)[0], "native_auprc": auprc(restored, truth)}
    if threshold is not None:
        mask = apply_operating_point(restored, voxel_size_zyx(reference.GetSpacing()), threshold, clean_up)
        result["native_dice"] = dice(mask, truth)
    return result
