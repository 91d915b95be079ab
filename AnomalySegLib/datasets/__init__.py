"""The paper's public datasets: their published layouts, preparation into case folders, seeded splits."""

from AnomalySegLib.datasets.layouts import LAYOUTS, DatasetFiles, DatasetLayout, get_layout
from AnomalySegLib.datasets.prepare import PreparedDataset, prepare_dataset
from AnomalySegLib.datasets.splits import make_splits

__all__ = ["LAYOUTS", "DatasetFiles", "DatasetLayout", "PreparedDataset", "get_layout", "make_splits",
           "prepare_dataset"]
