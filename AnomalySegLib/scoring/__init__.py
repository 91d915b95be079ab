"""Anomaly scores: 3D SSIM residual, median filter, SegUnet probability, thresholds, post-processing."""

# Names load on first use (PEP 562): importing the torch-free operating-point rule (which the Slicer
# module and the CLI's option parsing use) must not import torch through the SSIM and network modules.

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "THRESHOLD_PRESETS": "AnomalySegLib.scoring.operating_point",
    "CleanUp": "AnomalySegLib.scoring.operating_point",
    "OperatingPoint": "AnomalySegLib.scoring.operating_point",
    "apply_operating_point": "AnomalySegLib.scoring.operating_point",
    "ScoringConfig": "AnomalySegLib.scoring.anomaly_score",
    "bisection_dice_threshold": "AnomalySegLib.scoring.thresholds",
    "combined_score": "AnomalySegLib.scoring.anomaly_score",
    "dice_at": "AnomalySegLib.scoring.thresholds",
    "fpr_thresholds": "AnomalySegLib.scoring.thresholds",
    "median_filter_3d": "AnomalySegLib.scoring.median",
    "reconstruction_score": "AnomalySegLib.scoring.anomaly_score",
    "scoring_mask": "AnomalySegLib.scoring.anomaly_score",
    "ssim_map_3d": "AnomalySegLib.scoring.ssim",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
