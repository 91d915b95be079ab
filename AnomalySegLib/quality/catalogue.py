"""The names, units and wording of the domain-check measures: one definition, free of heavy imports so
that the results table (and the Slicer module) can list them."""

from __future__ import annotations

from dataclasses import dataclass

#: Below this value (Hounsfield units) a voxel counts as CT air; MR magnitude images are never this negative.
HOUNSFIELD_AIR = -500.0
#: Bins of the in-brain intensity histogram on the model's [0, 1] scale.
HISTOGRAM_BINS = 32


@dataclass(frozen=True)
class Measure:
    """What a domain measure is: ``label`` as a sentence fragment, ``unit`` and display ``digits``."""

    label: str
    unit: str
    digits: int

    def format(self, value: float) -> str:
        text = f"{value:.{self.digits}f}"
        return f"{text} {self.unit}" if self.unit else text


MEASURES: dict[str, Measure] = {
    "slice_thickness_mm": Measure("slice thickness", "mm", 1),
    "in_plane_spacing_mm": Measure("in-plane voxel spacing", "mm", 1),
    "neighbour_correlation": Measure("correlation of neighbouring voxels", "", 2),
    "hounsfield_air_fraction": Measure(f"fraction of voxels below {HOUNSFIELD_AIR:g} (CT air)", "", 2),
    "registration_similarity": Measure("normalized correlation with the brain template after registration",
                                       "", 2),
    "brain_volume_ml": Measure("brain volume (template brain scaled by the registration)", "ml", 0),
    "fov_brain_fraction": Measure("fraction of the brain inside the field of view", "", 2),
    "head_tilt_deg": Measure("rotation of the head from the template's orientation", "deg", 0),
    "intensity_distance": Measure("in-brain intensity histogram distance from the training scans", "",
                                  3),
}


def column_name(measure: str) -> str:
    """The results-table column of a measure: ``domain_<name>``."""
    return f"domain_{measure}"
