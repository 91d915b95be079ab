"""Bring a brain MRI into the model's space (docs/design.md, "Preprocessing") and map results back.

Public API::

    spec = PreprocessingSpec()                      # paper defaults; to_dict()/from_dict() round trip
    case = preprocess_file("t1.nii.gz", mask_path=None, labels_path="labels.nii.gz", label_values=[9])
    case = preprocess_image(image, mask, spec, labels, label_values)   # SimpleITK images in memory
    write_case(case, "out/case1")                   # case folder layout, see case_folder.py
    native = restore_to_native(model_map, reference_image, case.transform, kind="continuous")
"""

# Names load on first use (PEP 562), so that importing one light module of this package does not
# import SimpleITK through the others (scripts/gpu_check.py runs without it).
from AnomalySegLib.lazy_exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "case_folder": ("ModelSpaceCase", "list_cases", "load_case", "read_info", "read_transform", "write_case"),
    "pipeline": ("PreprocessedCase", "preprocess_file", "preprocess_image"),
    "restore": ("restore_to_native",),
    "spec": ("ModelGrid", "PreprocessingSpec", "SpecError"),
})
