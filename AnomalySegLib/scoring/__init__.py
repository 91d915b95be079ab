"""Anomaly scores: 3D SSIM residual, median filter, SegUnet probability, thresholds, post-processing."""

from AnomalySegLib.scoring.anomaly_score import (
    ScoringConfig,
    combined_score,
    reconstruction_score,
    scoring_mask,
)
from AnomalySegLib.scoring.median import median_filter_3d
from AnomalySegLib.scoring.operating_point import (
    THRESHOLD_PRESETS,
    CleanUp,
    OperatingPoint,
    apply_operating_point,
)
from AnomalySegLib.scoring.ssim import ssim_map_3d
from AnomalySegLib.scoring.thresholds import bisection_dice_threshold, dice_at, fpr_thresholds

__all__ = [
    "THRESHOLD_PRESETS",
    "CleanUp",
    "OperatingPoint",
    "apply_operating_point",
    "ScoringConfig",
    "bisection_dice_threshold",
    "combined_score",
    "dice_at",
    "fpr_thresholds",
    "median_filter_3d",
    "reconstruction_score",
    "scoring_mask",
    "ssim_map_3d",
]
