"""Volume and segmentation files, input checks and discovery, atomic outputs.

The engine reads and writes files only through this package, so that every format problem turns
into one clear :class:`~AnomalySegLib.errors.InputError` and no output is overwritten silently.

The names below are loaded on first use (PEP 562), so importing one light submodule (e.g.
``io.checksum`` or ``io.atomic``) does not load SimpleITK and nibabel.
"""

from __future__ import annotations

from AnomalySegLib.lazy_exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "atomic": ("atomic_output", "atomic_write_bytes", "atomic_write_text", "check_writable"),
    "case_inputs": ("CaseInput", "discover_cases"),
    "segmentation_io": ("ANOMALY_SEGMENT", "ANOMALY_TERMINOLOGY", "SegmentDescription", "Terminology",
                        "read_segmentation", "write_segmentation"),
    "validation": ("grid_differences", "validate_mask", "validate_volume"),
    "volume_io": ("READ_SUFFIXES", "WRITE_SUFFIXES", "dicom_series_ids", "read_volume", "strip_volume_suffix",
                  "volume_suffix", "write_volume"),
})
