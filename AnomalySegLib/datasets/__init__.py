"""The paper's public datasets: their published layouts, preparation into case folders, seeded splits.

The names below are loaded on first use (PEP 562): ``datasets.layouts`` alone (what the CLI's
parser needs) does not load the preprocessing pipeline.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "layouts": ("LAYOUTS", "DatasetFiles", "DatasetLayout", "get_layout"),
    "prepare": ("PreparedDataset", "prepare_dataset"),
    "splits": ("make_splits",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
