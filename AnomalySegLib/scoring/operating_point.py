"""The operating point: the one rule that turns an anomaly score map into the anomaly mask.

``segment`` (native grid), ``evaluate`` (model grid and ``--native``), ``calibrate`` (inside its search),
the benchmarks and the Slicer module's threshold slider all call :func:`apply_operating_point`, so one
score map gives one mask everywhere. numpy and scipy only: Slicer imports this without torch.

The rule, for a score map ``[Z, Y, X]`` with voxel size ``(dz, dy, dx)`` mm:

1. **threshold**: ``score > threshold``;
2. **brain-rim erosion**: keep voxels deeper than ``rim_erosion_mm`` inside the scored region (the
   map's support, holes filled: scores are zero outside the brain mask and outside the model grid).
   Scores on the rim come mostly from registration and skull-stripping errors;
3. **median**: the mask's median (majority) over a window ``median_mm`` wide (odd voxel counts per axis),
   which removes speckle and smooths edges;
4. **minimum finding size**: 26-connected findings smaller than ``min_finding_ml`` millilitres are dropped
   (in ml, not voxels: two scans of different voxel size honour the same size).

Every step is off at 0 (:data:`RAW`: the paper's protocol, ``score > threshold`` alone). The bundle's
``"scoring"`` section stores the three clean-up values next to the thresholds; the threshold presets are
named in :data:`THRESHOLD_PRESETS` (one definition for engine and Slicer module).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from AnomalySegLib.choices import THRESHOLD_PRESETS, VALIDATION_PRESET

#: Human-readable label of each preset (the Slicer module's list).
PRESET_LABELS = {
    "val": "Calibrated operating point (validation)",
    "fpr1": "Specific: 1 % of healthy brain voxels above",
    "fpr5": "Balanced: 5 % of healthy brain voxels above",
    "fpr10": "Sensitive: 10 % of healthy brain voxels above",
}
DEFAULT_PRESET = VALIDATION_PRESET
#: Findings are 26-connected (voxels touching at a corner belong to one finding, as in Slicer's islands tools).
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
#: Keys of the clean-up in the bundle's ``"scoring"`` section.
CLEAN_UP_KEYS = ("rim_erosion_mm", "median_mm", "min_finding_ml")
#: A legacy key (voxels differ per scan) that :class:`CleanUp` refuses when set.
_LEGACY_MIN_VOXELS = "min_component_voxels"


@dataclass(frozen=True)
class CleanUp:
    """The clean-up after thresholding (see the module docstring); 0 switches a step off.

    Attributes:
        rim_erosion_mm: depth of the scored region's rim that is never flagged, mm.
        median_mm: edge of the median window on the binary mask, mm (< 1.5 voxels: off on that axis).
        min_finding_ml: smallest finding kept, millilitres.
    """

    rim_erosion_mm: float = 0.0
    median_mm: float = 0.0
    min_finding_ml: float = 0.0

    def __post_init__(self) -> None:
        for key in CLEAN_UP_KEYS:
            value = getattr(self, key)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {value}")

    @property
    def is_raw(self) -> bool:
        return all(getattr(self, key) == 0 for key in CLEAN_UP_KEYS)

    def to_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}

    @classmethod
    def from_scoring(cls, section: Mapping[str, Any]) -> "CleanUp":
        """The clean-up stored in a bundle's ``"scoring"`` section (absent keys: off).

        Raises:
            ValueError: a value is negative, or the section sets the legacy ``min_component_voxels``.
        """
        if section.get(_LEGACY_MIN_VOXELS):
            raise ValueError(f"'{_LEGACY_MIN_VOXELS}' is no longer supported (voxel sizes differ per scan): "
                             "set 'min_finding_ml' instead")
        return cls(**{key: float(section[key]) for key in CLEAN_UP_KEYS if key in section})


#: The paper's protocol: ``score > threshold`` with no clean-up.
RAW = CleanUp()


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold, where it came from (a preset name or ``"user"``) and the clean-up applied with it."""

    threshold: float
    source: str = "user"
    clean_up: CleanUp = RAW

    def apply(self, score: np.ndarray, voxel_size_mm: Sequence[float],
              region: np.ndarray | None = None) -> np.ndarray:
        """:func:`apply_operating_point` with this point's threshold and clean-up."""
        return apply_operating_point(score, voxel_size_mm, self.threshold, self.clean_up, region)

    def to_info(self) -> dict[str, Any]:
        """What ``result.info.operating_point`` holds (JSON-ready)."""
        return {"threshold": float(self.threshold), "source": self.source, **self.clean_up.to_dict()}


def operating_point_from_scoring(section: Mapping[str, Any], request: str | float = DEFAULT_PRESET) -> OperatingPoint:
    """The operating point ``request`` (a preset name or a number) of a bundle's ``"scoring"`` section.

    Raises:
        KeyError: ``request`` names a preset the section does not have.
        ValueError: the section's clean-up is invalid.
    """
    clean_up = CleanUp.from_scoring(section)
    if not isinstance(request, str):
        return OperatingPoint(float(request), "user", clean_up)
    try:
        return OperatingPoint(float(request), "user", clean_up)
    except ValueError:
        pass
    thresholds = section.get("thresholds", {})
    if request not in thresholds:
        raise KeyError(request)
    return OperatingPoint(float(thresholds[request]), request, clean_up)


def voxel_size_zyx(spacing_xyz: Sequence[float]) -> tuple[float, float, float]:
    """Array-order voxel size ``(dz, dy, dx)`` from a SimpleITK/VTK spacing ``(dx, dy, dz)``, mm."""
    if len(spacing_xyz) != 3:
        raise ValueError(f"need three spacings, got {tuple(spacing_xyz)}")
    return tuple(float(s) for s in reversed(spacing_xyz))  # type: ignore[return-value]


def scored_region(score: np.ndarray) -> np.ndarray:
    """Where the map was scored: its non-zero support with holes filled, ``[Z, Y, X]`` bool.

    Scores are exactly 0 outside the brain mask and outside the model grid; a zero voxel inside the
    brain (a saturated probability) must not open a hole that the rim erosion would grow from.
    """
    return ndimage.binary_fill_holes(np.asarray(score) > 0)


def rim_eroded_region(score: np.ndarray, voxel_size_mm: Sequence[float], rim_erosion_mm: float) -> np.ndarray:
    """The scored region without its rim ``rim_erosion_mm`` deep (Euclidean distance in mm), ``[Z, Y, X]`` bool.

    Independent of the threshold: a slider can compute it once per map and pass it as ``region``.
    """
    region = scored_region(score)
    if rim_erosion_mm <= 0 or not region.any():
        return region
    # Padding makes the grid's border count as outside (a region touching it is eroded there too).
    depth = ndimage.distance_transform_edt(np.pad(region, 1), sampling=_check_voxel_size(voxel_size_mm))
    return depth[1:-1, 1:-1, 1:-1] > rim_erosion_mm


def apply_operating_point(score: np.ndarray, voxel_size_mm: Sequence[float], threshold: float,
                          clean_up: CleanUp = RAW, region: np.ndarray | None = None) -> np.ndarray:
    """The anomaly mask of a score map (see the module docstring).

    Args:
        score: anomaly score ``[Z, Y, X]`` (0 outside the scored brain).
        voxel_size_mm: ``(dz, dy, dx)`` in array order (:func:`voxel_size_zyx` converts a spacing).
        threshold: voxels strictly above it are candidates.
        clean_up: rim erosion, median, minimum finding size (:data:`RAW`: none).
        region: precomputed :func:`rim_eroded_region` for this map and ``clean_up`` (saves time when
            re-thresholding one map); computed when ``None``.

    Returns:
        ``[Z, Y, X]`` bool.
    """
    score = np.asarray(score)
    spacing = _check_voxel_size(voxel_size_mm)
    mask = score > threshold
    if clean_up.rim_erosion_mm > 0 and mask.any():
        if region is None:
            region = rim_eroded_region(score, spacing, clean_up.rim_erosion_mm)
        mask &= region
    window = median_window(spacing, clean_up.median_mm)
    if max(window) > 1 and mask.any():
        # The median of a 0/1 window of odd size n is 1 exactly when more than n/2 voxels are 1: a box
        # mean > 0.5, which uniform_filter computes far faster than scipy's sorting median_filter.
        mask = ndimage.uniform_filter(mask.astype(np.float32), size=window, mode="constant") > 0.5
    if clean_up.min_finding_ml > 0 and mask.any():
        mask = remove_small_findings(mask, spacing, clean_up.min_finding_ml)
    return mask


def median_window(voxel_size_mm: Sequence[float], median_mm: float) -> tuple[int, int, int]:
    """Odd voxel counts per axis covering ``median_mm`` (1 = no filtering on that axis)."""
    counts = []
    for size in voxel_size_mm:
        voxels = int(round(median_mm / size)) if median_mm > 0 else 1
        counts.append(max(1, voxels if voxels % 2 == 1 else voxels - 1))
    return tuple(counts)  # type: ignore[return-value]


def remove_small_findings(mask: np.ndarray, voxel_size_mm: Sequence[float], min_ml: float) -> np.ndarray:
    """Drop the 26-connected findings of ``mask`` ``[Z, Y, X]`` smaller than ``min_ml`` millilitres."""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=CONNECTIVITY)
    if count == 0:
        return mask
    voxel_ml = float(np.prod(voxel_size_mm)) / 1000.0
    keep = np.bincount(labels.ravel(), minlength=count + 1) * voxel_ml >= min_ml
    keep[0] = False
    return keep[labels]


def _check_voxel_size(voxel_size_mm: Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in voxel_size_mm)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"voxel size must be three positive numbers (mm), got {tuple(voxel_size_mm)}")
    return spacing  # type: ignore[return-value]
