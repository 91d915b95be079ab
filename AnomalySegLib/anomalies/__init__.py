"""Synthetic anomalies for self-supervised Stage II training and for tests."""

# Names load on first use (PEP 562): the torch-free volume lesions (calibration's option defaults)
# must not import torch through the slice generators.

from __future__ import annotations

from AnomalySegLib.lazy_exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "mixture": ("AnomalyGenerator", "AnomalyMixture"),
    "draem": ("DraemAnomalyGenerator", "SyntheticAnomalies"),
    "lesion": ("LesionAnomalyGenerator",),
    "tumour": ("TumourAnomalyGenerator", "TumourAppearance", "paint_tumour"),
    "sphere": ("SphereAnomalyGenerator",),
})
