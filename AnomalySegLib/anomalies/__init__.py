"""Synthetic anomalies for self-supervised Stage II training and for tests."""

# Names load on first use (PEP 562): the torch-free volume lesions (calibration's option defaults)
# must not import torch through the slice generators.

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnomalyGenerator": "AnomalySegLib.anomalies.mixture",
    "AnomalyMixture": "AnomalySegLib.anomalies.mixture",
    "DraemAnomalyGenerator": "AnomalySegLib.anomalies.draem",
    "LesionAnomalyGenerator": "AnomalySegLib.anomalies.lesion",
    "SphereAnomalyGenerator": "AnomalySegLib.anomalies.sphere",
    "SyntheticAnomalies": "AnomalySegLib.anomalies.draem",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
