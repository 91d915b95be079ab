"""Bring a brain MRI into the model's space (docs/design.md, "Preprocessing") and map results back.

Public API::

    spec = PreprocessingSpec()                      # paper defaults; to_dict()/from_dict() round trip
    case = preprocess_file("t1.nii.gz", mask_path=None, labels_path="labels.nii.gz", label_values=[9])
    case = preprocess_image(image, mask, spec, labels, label_values)   # SimpleITK images in memory
    write_case(case, "out/case1")                   # case folder layout, see case_folder.py
    native = restore_to_native(model_map, reference_image, case.transform, kind="continuous")
"""

# Names are imported from their modules on first use (PEP 562), so that importing one light module of
# this package does not import SimpleITK through the others (scripts/gpu_check.py runs without it).
import importlib
from typing import Any

_EXPORTS = {
    "ModelSpaceCase": "case_folder",
    "list_cases": "case_folder",
    "load_case": "case_folder",
    "read_info": "case_folder",
    "read_transform": "case_folder",
    "write_case": "case_folder",
    "PreprocessedCase": "pipeline",
    "preprocess_file": "pipeline",
    "preprocess_image": "pipeline",
    "restore_to_native": "restore",
    "ModelGrid": "spec",
    "PreprocessingSpec": "spec",
    "SpecError": "spec",
}

__all__ = [
    "ModelGrid",
    "ModelSpaceCase",
    "PreprocessedCase",
    "PreprocessingSpec",
    "SpecError",
    "list_cases",
    "load_case",
    "preprocess_file",
    "preprocess_image",
    "read_info",
    "read_transform",
    "restore_to_native",
    "write_case",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
