"""The on-disk cache of preprocessed volumes (``preprocessing/model_space_cache.py``): keyed by the spec and
the code that applies it, filled once, read back without preprocessing again."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from AnomalySegLib.preprocessing import model_space_cache
from AnomalySegLib.preprocessing.model_space_cache import cached_case, preprocessing_fingerprint, spec_key
from AnomalySegLib.preprocessing.spec import PreprocessingSpec


def copy_of_engine_sources(destination: Path) -> Path:
    """The engine's preprocessing and I/O sources copied under ``destination`` (what the fingerprint reads)."""
    for folder in ("preprocessing", "io"):
        shutil.copytree(model_space_cache._PACKAGE / folder, destination / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def test_fingerprint_follows_the_spec_and_the_preprocessing_code(tmp_path, monkeypatch):
    spec = PreprocessingSpec()
    other_spec = dataclasses.replace(spec, denoise_iterations=spec.denoise_iterations + 1)
    fingerprint = preprocessing_fingerprint(spec)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert preprocessing_fingerprint(PreprocessingSpec()) == fingerprint
    assert preprocessing_fingerprint(other_spec) != fingerprint

    package = copy_of_engine_sources(tmp_path / "package")
    monkeypatch.setattr(model_space_cache, "_PACKAGE", package)
    assert preprocessing_fingerprint(spec) == fingerprint  # same sources, same fingerprint
    registration = package / "preprocessing" / "registration.py"
    registration.write_text(registration.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert preprocessing_fingerprint(spec) != fingerprint
    assert spec_key(spec) == spec_key(PreprocessingSpec())  # the bank's key reads the spec alone


@pytest.mark.slow
def test_cached_case_preprocesses_once_then_reads_the_arrays_back(tmp_path, real_data):
    image = tmp_path / "scan.nii.gz"
    shutil.copyfile(real_data("itk_kmeans_t1"), image)
    spec = PreprocessingSpec()
    first = cached_case("scan", image, tmp_path / "cache", spec)
    stored = tmp_path / "cache" / preprocessing_fingerprint(spec) / "scan.npz"
    assert stored.is_file()
    assert not list(stored.parent.glob(".*partial*"))
    assert first.image.shape == first.mask.shape == spec.grid.array_shape
    assert first.mask.dtype == bool and 0.15 < first.mask.mean() < 0.7

    image.unlink()  # a second call must not need the scan: it reads the cache
    second = cached_case("scan", image, tmp_path / "cache", spec)
    np.testing.assert_array_equal(second.image, first.image)
    np.testing.assert_array_equal(second.mask, first.mask)
