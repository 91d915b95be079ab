"""Volume and segmentation files, input checks and discovery, atomic outputs.

The engine reads and writes files only through this package, so that every format problem turns
into one clear :class:`~AnomalySegLib.errors.InputError` and no output is overwritten silently.
"""

from AnomalySegLib.io.atomic import atomic_output, atomic_write_bytes, atomic_write_text, check_writable
from AnomalySegLib.io.case_inputs import CaseInput, discover_cases
from AnomalySegLib.io.segmentation_io import (
    ANOMALY_SEGMENT,
    ANOMALY_TERMINOLOGY,
    SegmentDescription,
    Terminology,
    read_segmentation,
    write_segmentation,
)
from AnomalySegLib.io.validation import grid_differences, validate_mask, validate_volume
from AnomalySegLib.io.volume_io import (
    READ_SUFFIXES,
    WRITE_SUFFIXES,
    dicom_series_ids,
    read_volume,
    strip_volume_suffix,
    volume_suffix,
    write_volume,
)

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
