#!/usr/bin/env python
"""Accuracy of the bundled default model on the two real tumour cases (never used in training).

For MRBrainTumor1 (tumour = label 9) and MRBrainTumor2 (tumour = label 1):

- **model grid** (the bundle's, e.g. 96×96×84 for the whole brain): the case is preprocessed with its
  labels, scored by the full model (SADM: Stage I + Stage II) and by Stage I alone; ⌈Dice⌉ (oracle
  threshold), Dice at the calibrated "val" threshold and at the healthy FPR presets (each with the
  bundle's clean-up, the operating-point rule of ``segment``), AUPRC;
- **native grid** (what a user sees): :class:`~AnomalySegLib.pipeline.AnomalySegmenter` on the original
  file; ⌈Dice⌉ of the restored anomaly map and Dice of the restored mask at the "val" threshold against
  the original label map; wall time of the whole ``segment`` call.

Prints a table and writes it as the ``<!-- default_model -->`` section of BENCHMARKS.md.

Usage::

    python benchmarks/default_model.py [--model Resources/Models/default] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from benchmark_report import publish, shown_path

from AnomalySegLib import sample_data
from AnomalySegLib.device import cpu_model
from AnomalySegLib.metrics import best_dice, dice, volume_metrics
from AnomalySegLib.pipeline import AnomalySegmenter, default_model_path
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.scoring.operating_point import apply_operating_point, voxel_size_zyx

SECTION = "default_model"
#: (image, labels, tumour label value) of the test cases.
CASES = {"MRBrainTumor1": ("mrbraintumor1", "mrbraintumor1_labels", 9),
         "MRBrainTumor2": ("mrbraintumor2", "mrbraintumor2_labels", 1)}
PRESETS = ("val", "fpr1", "fpr5", "fpr10")


def evaluate_case(segmenter: AnomalySegmenter, image_name: str, labels_name: str, value: int) -> dict:
    """Model-grid and native-grid metrics of one case (see the module docstring)."""
    image_path, labels_path = sample_data.fetch(image_name), sample_data.fetch(labels_name)
    row: dict = {}

    case = preprocess_file(image_path, labels_path=labels_path, label_values=[value], spec=segmenter.spec)
    image, mask, truth = case.arrays()
    truth = truth.astype(bool)
    scores = segmenter.scorer.score(image, mask, seed=segmenter.seed)
    full = volume_metrics(scores.anomaly_score, truth, segmenter.thresholds.get("val"), mask.astype(bool))
    row["model_best_dice"], row["model_auprc"] = full.best_dice, full.auprc
    for preset in PRESETS:
        if preset in segmenter.thresholds:
            predicted = apply_operating_point(scores.anomaly_score, voxel_size_zyx(segmenter.spec.grid.spacing),
                                              segmenter.thresholds[preset], segmenter.clean_up)
            row[f"model_dice_{preset}"] = dice(predicted, truth)
            row[f"model_volume_ratio_{preset}"] = float(predicted.sum() / max(truth.sum(), 1))
    # Stage I only is x̃ in the brain (what a Stage-I-only bundle scores), from the same pass.
    row["stage1_best_dice"] = best_dice(scores.reconstruction_term * scores.mask, truth)[0]
    row["seg_best_dice"] = best_dice(scores.segmentation_probability * scores.mask, truth)[0]
    row["tumour_voxels_model_grid"] = int(truth.sum())

    start = time.perf_counter()
    result = segmenter.segment_file(image_path, threshold="val")
    row["segment_s"] = time.perf_counter() - start
    native_truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path))) == value
    anomaly_map = sitk.GetArrayFromImage(result.anomaly_map)
    if native_truth.shape != anomaly_map.shape:
        raise RuntimeError(f"{labels_path}: label grid {native_truth.shape} differs from the image's "
                           f"{anomaly_map.shape}")
    row["native_best_dice"] = best_dice(anomaly_map, native_truth)[0]
    row["native_dice_val"] = dice(sitk.GetArrayFromImage(result.anomaly_mask) > 0, native_truth)
    row["native_found_ml"] = result.findings.volume_ml
    spacing = np.prod(result.image.GetSpacing())
    row["native_truth_ml"] = float(native_truth.sum() * spacing / 1000.0)
    return row


def section(model: Path, segmenter: AnomalySegmenter, rows: dict[str, dict]) -> str:
    thresholds = ", ".join(f"{name} {value:.4f}" for name, value in sorted(segmenter.thresholds.items()))
    lines = [
        "## Default model on the tumour cases (`benchmarks/default_model.py`)",
        "",
        f"Model `{segmenter.model_name}` (`{shown_path(model)}`), seed {segmenter.seed}, device {segmenter.device}, "
        f"precision {segmenter.precision} (`auto` on this machine). "
        "Neither case was used for training or calibration. Model grid: "
        f"{'×'.join(map(str, segmenter.spec.grid.size))} at {segmenter.spec.grid.spacing[0]:g} mm; native grid: "
        "the original file through `AnomalySegmenter.segment_file`, maps restored to the input "
        f"grid. Thresholds: {thresholds}. ⌈Dice⌉ uses the best (oracle) threshold per volume on the raw "
        "score; the Dice @ columns apply the bundle's clean-up as `segment` does (median filter, small "
        "findings dropped), which is why they can exceed ⌈Dice⌉; "
        f"Stage I only: the SSIM term alone (no SegUnet); SegUnet only: ŷ alone; the model's score weighs "
        f"them β = {segmenter.scorer.config.beta:g} and 1 − β. Measured "
        f"{datetime.date.today().isoformat()}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{cpu_model()}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}.",
        "",
        "| case | ⌈Dice⌉ model grid | Dice @val | Dice @fpr1 | Dice @fpr5 | Dice @fpr10 | predicted/true volume @val "
        "| AUPRC | ⌈Dice⌉ Stage I only | ⌈Dice⌉ SegUnet only | ⌈Dice⌉ native | Dice @val native | found / true ml (native) | segment s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row: dict, key: str, digits: int = 3) -> str:
        return f"{row[key]:.{digits}f}" if key in row else "–"

    for name, row in rows.items():
        lines.append(
            f"| {name} | {cell(row, 'model_best_dice')} | {cell(row, 'model_dice_val')} | "
            f"{cell(row, 'model_dice_fpr1')} | {cell(row, 'model_dice_fpr5')} | {cell(row, 'model_dice_fpr10')} | "
            f"{cell(row, 'model_volume_ratio_val', 2)} | {cell(row, 'model_auprc')} | "
            f"{cell(row, 'stage1_best_dice')} | {cell(row, 'seg_best_dice')} | "
            f"{cell(row, 'native_best_dice')} | {cell(row, 'native_dice_val')} | "
            f"{row['native_found_ml']:.1f} / {row['native_truth_ml']:.1f} | {row['segment_s']:.1f} |"
        )
    mean_best = np.mean([row["model_best_dice"] for row in rows.values()])
    mean_val = np.mean([row.get("model_dice_val", np.nan) for row in rows.values()])
    lines += ["", f"Mean over both cases, model grid: ⌈Dice⌉ {mean_best:.3f}, Dice @val {mean_val:.3f}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path(), help="bundle (default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segmenter = AnomalySegmenter(args.model, device=args.device)
    rows = {name: evaluate_case(segmenter, *case) for name, case in CASES.items()}
    publish(SECTION, section(args.model, segmenter, rows), write=not args.no_write)


if __name__ == "__main__":
    main()
