"""Quantities a reader wants about the thresholded anomaly: volume, components, scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

# 26-connectivity: voxels touching at a corner belong to one finding, as in Slicer's islands tools.
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Findings:
    """Summary of one case's anomaly mask and map on the native grid.

    Volumes in millilitres; scores in the anomaly map's units (0–1); ``largest_center_index`` is the
    (i, j, k) voxel index of the largest component's centre of mass, ``None`` when nothing was found.
    """

    volume_ml: float
    components: int
    largest_component_ml: float
    max_score: float
    mean_score_in_finding: float
    largest_center_index: tuple[int, int, int] | None

    def as_row(self) -> dict[str, object]:
        row = asdict(self)
        row["largest_center_index"] = (
            " ".join(map(str, self.largest_center_index)) if self.largest_center_index else ""
        )
        return row


def summarize_findings(mask: sitk.Image, score_map: sitk.Image) -> Findings:
    """Findings of a binary ``mask`` (>0 = anomalous) and its continuous ``score_map`` (same grid)."""
    mask_array = sitk.GetArrayViewFromImage(mask) > 0  # [k, j, i]
    scores = sitk.GetArrayViewFromImage(score_map)
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    labels, count = ndimage.label(mask_array, structure=_CONNECTIVITY)
    if count == 0:
        return Findings(0.0, 0, 0.0, float(scores.max()), 0.0, None)
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    center_kji = ndimage.center_of_mass(labels == largest)
    return Findings(
        volume_ml=float(mask_array.sum()) * voxel_ml,
        components=int(count),
        largest_component_ml=float(sizes[largest - 1]) * voxel_ml,
        max_score=float(scores.max()),
        mean_score_in_finding=float(scores[mask_array].mean()),
        largest_center_index=tuple(int(round(c)) for c in reversed(center_kji)),
    )
