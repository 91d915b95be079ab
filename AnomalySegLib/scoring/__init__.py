"""Anomaly scores: 3D SSIM residual, median filter, SegUnet probability, thresholds, post-processing."""

# Names load on first use (PEP 562): importing the torch-free operating-point rule (which the Slicer
# module and the CLI's option parsing use) must not import torch through the SSIM and network modules.

from __future__ import annotations

from AnomalySegLib.lazy_exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "operating_point": ("THRESHOLD_PRESETS", "CleanUp", "OperatingPoint", "apply_operating_point"),
    "anomaly_score": ("ScoringSpec", "combined_score", "reconstruction_score", "scoring_mask"),
    "thresholds": ("bisection_dice_threshold", "dice_at", "fpr_thresholds"),
    "median": ("median_filter_3d",),
    "ssim": ("ssim_map_3d",),
})
