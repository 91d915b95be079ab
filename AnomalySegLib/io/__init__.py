"""Volume and segmentation files, input checks and discovery, atomic outputs.

The engine reads and writes files only through this package, so that every format problem turns
into one clear :class:`~AnomalySegLib.errors.InputError` and no output is overwritten silently.

The names below are loaded on first use (PEP 562), so importing one light submodule (e.g.
``io.checksum`` or ``io.atomic``) does not load SimpleITK and nibabel.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "atomic": ("atomic_output", "atomic_write_bytes", "atomic_write_text", "check_writable"),
    "case_inputs": ("CaseInput", "discover_cases"),
    "segmentation_io": ("ANOMALY_SEGMENT", "ANOMALY_TERMINOLOGY", "SegmentDescription", "Terminology",
                        "read_segmentation", "write_segmentation"),
    "validation": ("grid_differences", "validate_mask", "validate_volume"),
    "volume_io": ("READ_SUFFIXES", "WRITE_SUFFIXES", "dicom_series_ids", "read_volume", "strip_volume_suffix",
                  "volume_suffix", "write_volume"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
