"""Preprocessed volumes kept on disk as ``.npz`` arrays, so that a recipe, benchmark or test preprocesses
each volume once.

``cached_case(name, image_path, cache, spec)`` preprocesses ``image_path`` into model space the first
time and stores ``<cache>/<fingerprint>/<name>.npz`` (image, mask and, with labels, the labels); later
calls read it back. The fingerprint (:func:`preprocessing_fingerprint`) hashes the preprocessing spec, the
preprocessing and I/O sources and the template files, so neither a changed spec nor changed code ever
reuses stale arrays. A preprocessed case folder (:mod:`.case_folder`) keeps the transform and provenance
as well; this cache keeps only the arrays, which is all training and model-grid evaluation need.

:func:`spec_key` hashes the spec alone: the variant bank, expensive to rebuild, is keyed by it.
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
from AnomalySegLib.resources import resources_dir

#: The engine package; its preprocessing and I/O sources are part of the fingerprint.
_PACKAGE = Path(__file__).resolve().parent.parent


def spec_key(spec: PreprocessingSpec) -> str:
    """16 hex digits identifying ``spec`` (its JSON form, keys sorted)."""
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()[:16]


def preprocessing_fingerprint(spec: PreprocessingSpec) -> str:
    """16 hex digits identifying ``spec`` and the code and data that apply it: the JSON form of the spec
    (keys sorted), every ``preprocessing/*.py`` and ``io/*.py`` source of the engine and every template
    image. Any change to one of them gives another fingerprint."""
    digest = hashlib.sha256(spec_key(spec).encode("ascii"))
    for source in sorted([*_PACKAGE.glob("preprocessing/*.py"), *_PACKAGE.glob("io/*.py")]):
        digest.update(source.read_bytes())
    for template_file in sorted((resources_dir() / "Templates").rglob("*.nii*")):
        digest.update(template_file.read_bytes())
    return digest.hexdigest()[:16]


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
    folder = Path(cache) / preprocessing_fingerprint(spec)
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
