"""Bring a brain MRI into the model's space (docs/design.md, "Preprocessing") and map results back.

Public API::

    spec = PreprocessingSpec()                      # paper defaults; to_dict()/from_dict() round trip
    case = preprocess_file("t1.nii.gz", mask_path=None, labels_path="labels.nii.gz", label_values=[9])
    case = preprocess_image(image, mask, spec, labels, label_values)   # SimpleITK images in memory
    write_case(case, "out/case1")                   # case folder layout, see case_folder.py
    native = restore_to_native(model_map, reference_image, case.transform, kind="continuous")
"""

from AnomalySegLib.preprocessing.case_folder import (
    ModelSpaceCase,
    list_cases,
    load_case,
    read_info,
    read_transform,
    write_case,
)
from AnomalySegLib.preprocessing.pipeline import PreprocessedCase, preprocess_file, preprocess_image
from AnomalySegLib.preprocessing.restore import restore_to_native
from AnomalySegLib.preprocessing.spec import ModelGrid, PreprocessingSpec, SpecError

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
