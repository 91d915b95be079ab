"""The paper's public datasets: their published layouts, preparation into case folders, seeded splits.

The names below are loaded on first use (PEP 562): ``datasets.layouts`` alone (what the CLI's
parser needs) does not load the preprocessing pipeline.
"""

from __future__ import annotations

from AnomalySegLib.lazy_exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "layouts": ("LAYOUTS", "DatasetFiles", "DatasetLayout", "get_layout"),
    "prepare": ("PreparedDataset", "prepare_dataset"),
    "splits": ("make_splits",),
})
