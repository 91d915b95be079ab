"""Volume and segmentation files, input checks and discovery, atomic outputs.

The engine reads and writes files only through this package, so that every format problem turns
into one clear :class:`~AnomalySegLib.errors.InputError` and no output is overwritten silently.
"""

# Names are imported from their modules on first use (PEP 562), so that importing one light module of
# this package does not import SimpleITK through the others (scripts/gpu_check.py runs without it).
import importlib
from typing import Any

_EXPORTS = {
    "atomic_output": "atomic",
    "atomic_write_bytes": "atomic",
    "atomic_write_text": "atomic",
    "check_writable": "atomic",
    "CaseInput": "case_inputs",
    "discover_cases": "case_inputs",
    "ANOMALY_SEGMENT": "segmentation_io",
    "ANOMALY_TERMINOLOGY": "segmentation_io",
    "SegmentDescription": "segmentation_io",
    "Terminology": "segmentation_io",
    "read_segmentation": "segmentation_io",
    "write_segmentation": "segmentation_io",
    "grid_differences": "validation",
    "validate_mask": "validation",
    "validate_volume": "validation",
    "READ_SUFFIXES": "volume_io",
    "WRITE_SUFFIXES": "volume_io",
    "dicom_series_ids": "volume_io",
    "read_volume": "volume_io",
    "strip_volume_suffix": "volume_io",
    "volume_suffix": "volume_io",
    "write_volume": "volume_io",
}

__all__ = [
    "ANOMALY_SEGMENT",
    "ANOMALY_TERMINOLOGY",
    "CaseInput",
    "SegmentDescription",
    "Terminology",
    "read_segmentation",
    "write_segmentation",
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "dicom_series_ids",
    "discover_cases",
    "grid_differences",
    "read_volume",
    "strip_volume_suffix",
    "validate_mask",
    "validate_volume",
    "volume_suffix",
    "write_volume",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
