#!/usr/bin/env python
"""The bundled default model's operating point, before and after the clean-up rule, with the same weights.

Each case goes once through :class:`~AnomalySegLib.pipeline.AnomalySegmenter` (native grid, as
``segment``); the restored anomaly map is then thresholded twice:

- **before**: the previous rule: ``map > t_old`` with the previous calibrated "val" threshold (read from
  the bundle's ``calibration.previous_thresholds``), no clean-up;
- **after**: the bundle's operating point (:mod:`AnomalySegLib.scoring.operating_point`: "val" threshold,
  rim erosion, median, minimum finding size in ml), exactly what ``segment`` writes.

Cases: MRBrainTumor1/2 with their tumour labels (9 and 1; never used for any choice) and the healthy real
scans the model never trained on (two of them chose the operating point, two were kept out). Reported:
Dice, flagged vs true ml and number of findings; the fraction of the brain inside the scored box.

Usage::

    python benchmarks/operating_point.py [--model Resources/Models/default] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from benchmark_report import publish

from AnomalySegLib import sample_data
from AnomalySegLib.errors import InputError
from AnomalySegLib.device import cpu_model
from AnomalySegLib.metrics import dice
from AnomalySegLib.pipeline import AnomalySegmenter, default_model_path
from AnomalySegLib.reporting.findings import summarize_findings
from AnomalySegLib.scoring.operating_point import RAW, apply_operating_point, voxel_size_zyx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from calibrate_default_model import default_model_split  # noqa: E402

SECTION = "operating_point"
TUMOURS = {"MRBrainTumor1": ("mrbraintumor1", "mrbraintumor1_labels", 9),
           "MRBrainTumor2": ("mrbraintumor2", "mrbraintumor2_labels", 1)}


def _measure(mask: np.ndarray, anomaly_map: sitk.Image, truth: np.ndarray | None) -> dict:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(anomaly_map)
    findings = summarize_findings(image, anomaly_map)
    row = {"ml": findings.volume_ml, "findings": findings.components}
    if truth is not None:
        row["dice"] = dice(mask, truth)
    return row


def anomaly_map(segmenter: AnomalySegmenter, image_name: str, cache: Path | None) -> tuple[sitk.Image, float]:
    """The case's native anomaly map and scored brain fraction from ``segment``; kept in ``cache`` (the map
    does not depend on the operating point, so a re-run with another rule needs no network pass)."""
    cached = None if cache is None else cache / f"{image_name}_anomaly_map.nii.gz"
    if cached is not None and cached.is_file():
        info = json.loads(cached.with_suffix("").with_suffix(".json").read_text(encoding="utf-8"))
        return sitk.ReadImage(str(cached)), float(info["scored_brain_fraction"])
    result = segmenter.segment_file(sample_data.fetch(image_name), threshold="val")
    spacing = voxel_size_zyx(result.image.GetSpacing())
    after = sitk.GetArrayFromImage(result.anomaly_mask) > 0
    scores = sitk.GetArrayFromImage(result.anomaly_map)
    assert np.array_equal(after, apply_operating_point(scores, spacing, result.threshold, segmenter.clean_up))
    if cached is not None:
        cache.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(result.anomaly_map, str(cached))
        cached.with_suffix("").with_suffix(".json").write_text(
            json.dumps({"scored_brain_fraction": result.info.scored_brain_fraction}), encoding="utf-8")
    return result.anomaly_map, float(result.info.scored_brain_fraction)


def evaluate_case(segmenter: AnomalySegmenter, image_name: str, old_threshold: float,
                  labels: tuple[str, int] | None, cache: Path | None = None) -> dict:
    score_map, scored = anomaly_map(segmenter, image_name, cache)
    scores = sitk.GetArrayFromImage(score_map)
    truth = None
    row: dict = {"scored": scored}
    if labels is not None:
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_data.fetch(labels[0])))) == labels[1]
        row["true_ml"] = float(truth.sum() * np.prod(score_map.GetSpacing()) / 1000.0)
    spacing = voxel_size_zyx(score_map.GetSpacing())
    row["before"] = _measure(apply_operating_point(scores, spacing, old_threshold, RAW), score_map, truth)
    after = apply_operating_point(scores, spacing, segmenter.thresholds["val"], segmenter.clean_up)
    row["after"] = _measure(after, score_map, truth)
    return row


def section(model: Path, segmenter: AnomalySegmenter, old_threshold: float, tumours: dict, healthy: dict,
            calibration_scans: list[str]) -> str:
    clean_up = segmenter.clean_up
    lines = [
        "## Operating point: before and after the clean-up rule (`benchmarks/operating_point.py`)",
        "",
        f"Model `{segmenter.model_name}` (`{model}`), same weights before and after, seed {segmenter.seed}, "
        f"native grid (`AnomalySegmenter.segment_file`). **Before**: map > {old_threshold:.4f} (the previous "
        f"\"val\" threshold, Dice-optimal on pooled voxels of slice-wise synthetic anomalies), no clean-up. "
        f"**After**: the bundle's operating point: map > {segmenter.thresholds['val']:.4f}, rim erosion "
        f"{clean_up.rim_erosion_mm:g} mm, median {clean_up.median_mm:g} mm, findings under "
        f"{clean_up.min_finding_ml:g} ml dropped, chosen by `scripts/calibrate_default_model.py` (best mean Dice "
        f"on lesioned copies of the variant-bank cases of {', '.join(calibration_scans)} with at most 5 ml and 5 "
        "findings on each of them "
        "unchanged). MRBrainTumor1/2 took part in no choice. Scored: fraction of the brain inside the model "
        f"grid's box. Measured {datetime.date.today().isoformat()}, torch {torch.__version__}, Python "
        f"{platform.python_version()}, {cpu_model()}, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| tumour case | Dice before | Dice after | flagged / true ml before | flagged / true ml after "
        "| findings before | findings after | scored |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in tumours.items():
        b, a = row["before"], row["after"]
        lines.append(f"| {name} | {b['dice']:.3f} | {a['dice']:.3f} | {b['ml']:.1f} / {row['true_ml']:.1f} "
                     f"| {a['ml']:.1f} / {row['true_ml']:.1f} | {b['findings']} | {a['findings']} "
                     f"| {100 * row['scored']:.0f} % |")
    lines += [
        "",
        "| healthy scan (never trained on) | role | flagged ml before | flagged ml after | findings before "
        "| findings after | scored |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in healthy.items():
        role = "chose the operating point" if name in calibration_scans else "untouched"
        if "refused" in row:
            lines.append(f"| {name} | {role} | refused: {row['refused'].split(': ', 1)[-1]} | | | | |")
            continue
        b, a = row["before"], row["after"]
        lines.append(f"| {name} | {role} | {b['ml']:.1f} | {a['ml']:.1f} | {b['findings']} | {a['findings']} "
                     f"| {100 * row['scored']:.0f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path(), help="bundle (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--cache", type=Path, help="keep the anomaly maps here and reuse them (same weights)")
    parser.add_argument("--maps-only", nargs="*", metavar="CASE",
                        help="only compute the maps into --cache (of these cases; default: all)")
    parser.add_argument("--old-threshold", type=float,
                        help="the previous 'val' threshold (default: the bundle's calibration.previous_thresholds)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segmenter = AnomalySegmenter(args.model, device="cpu")
    calibration_scans, untouched_scans = default_model_split(segmenter.bundle)
    names = [image for image, _, _ in TUMOURS.values()] + [*calibration_scans, *untouched_scans]
    if args.maps_only is not None:
        for name in args.maps_only or names:
            anomaly_map(segmenter, name, args.cache)
        return
    old_threshold = args.old_threshold
    if old_threshold is None:
        old_threshold = float(segmenter.bundle.description["scoring"]["calibration"]["previous_thresholds"]["val"])
    tumours = {name: evaluate_case(segmenter, image, old_threshold, (labels, value), args.cache)
               for name, (image, labels, value) in TUMOURS.items()}
    healthy = {}
    for name in (*calibration_scans, *untouched_scans):
        try:
            healthy[name] = evaluate_case(segmenter, name, old_threshold, None, args.cache)
        except InputError as error:  # refused by the input checks: reported, not scored
            healthy[name] = {"refused": str(error)}
    model = args.model.resolve()
    shown = model.relative_to(Path.cwd()) if model.is_relative_to(Path.cwd()) else model.name
    publish(SECTION, section(Path(shown), segmenter, old_threshold, tumours, healthy, calibration_scans),
            write=not args.no_write)


if __name__ == "__main__":
    main()
