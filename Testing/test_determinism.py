"""Repeatability: the same scan preprocessed twice in one process gives the same model-space arrays.

The API-vs-CLI map comparison of ``test_segment.py`` failed now and then in the full suite (2026-12-01)
because of the registration: ITK's Mattes mutual information adds the contributions of its threads to
one joint histogram in no fixed order, so a multi-threaded affine registration differs from run to run
in the last float digits (transform parameters ~1e-6, preprocessed intensities ~2e-5 on MRBrainTumor1),
more often on a loaded machine, whatever ran before in the process. On one ITK thread it is repeatable,
so the registration's metric runs on one thread (``preprocessing/registration.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.preprocessing.pipeline import preprocess_file

RUNS = 3


@contextmanager
def itk_threads(threads: int | None) -> Iterator[None]:
    """ITK's global default thread count set to ``threads`` (``None``: unchanged), restored afterwards."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if threads is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def repeated_arrays(path, threads: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(image, mask)`` of :data:`RUNS` preprocessings of ``path`` in this process."""
    with itk_threads(threads):
        return [preprocess_file(path).arrays()[:2] for _ in range(RUNS)]


def assert_identical(runs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for image, mask in runs[1:]:
        difference = float(np.abs(image - runs[0][0]).max())
        assert difference == 0.0, f"preprocessed intensities differ between runs by up to {difference:.2e}"
        assert np.array_equal(mask, runs[0][1])


@pytest.mark.slow
def test_preprocessing_is_repeatable_on_one_itk_thread(real_data):
    assert_identical(repeated_arrays(real_data("mrbraintumor1"), threads=1))


@pytest.mark.slow
@pytest.mark.skipif(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() < 2,
                    reason="ITK runs on one thread here: repeatable by construction")
def test_preprocessing_is_repeatable_with_the_default_itk_threads(real_data):
    assert_identical(repeated_arrays(real_data("mrbraintumor1"), threads=None))
