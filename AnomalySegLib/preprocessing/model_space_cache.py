"""Preprocessed volumes kept on disk as ``.npz`` arrays, so that a recipe or benchmark preprocesses each
volume once.

``cached_case(name, image_path, cache, spec)`` preprocesses ``image_path`` into model space the first
time and stores ``<cache>/<spec key>/<name>.npz`` (image, mask and, with labels, the labels); later calls
read it back. The spec key is a hash of the preprocessing spec, so a changed spec never reuses stale
arrays. A preprocessed case folder (:mod:`.case_folder`) keeps the transform and provenance as well;
this cache keeps only the arrays, which is all training and model-grid evaluation need.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.preprocessing.spec import PreprocessingSpec


def spec_key(spec: PreprocessingSpec) -> str:
    """16 hex digits identifying ``spec`` (its JSON form, keys sorted)."""
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()[:16]


def cached_case(
    name: str,
    image_path: str | Path,
    cache: str | Path,
    spec: PreprocessingSpec,
    labels_path: str | Path | None = None,
    label_values: Sequence[int] | None = None,
) -> ModelSpaceCase:
    """The volume ``image_path`` in model space (arrays ``[Z, Y, X]``) as case ``name``, from the cache
    or preprocessed now and stored (written to a temporary name and renamed: never half a file)."""
    folder = Path(cache) / spec_key(spec)
    stored = folder / f"{name}.npz"
    if not stored.is_file():
        case = preprocess_file(image_path, labels_path=labels_path, label_values=label_values, spec=spec)
        image, mask, labels = case.arrays()
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.partial.npz"
        np.savez_compressed(partial, image=image, mask=mask, **({} if labels is None else {"labels": labels}))
        partial.replace(stored)
    with np.load(stored, allow_pickle=False) as arrays:
        labels = arrays["labels"].astype(bool) if "labels" in arrays else None
        return ModelSpaceCase(name, arrays["image"], arrays["mask"].astype(bool), labels)
