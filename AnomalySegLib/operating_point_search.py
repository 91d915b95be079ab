"""Choosing the operating point (threshold and clean-up) by a stated rule, on data that resembles use.

The rule (``anomalyseg calibrate --healthy H``; :class:`SearchRule` holds its settings):

- **data**: healthy scans the model never trained on (preprocessed case folders), each scored as it
  is, and ``lesion_copies`` copies of each with 3D lesion-like anomalies (bright and dark, 0.5–30 ml,
  :class:`~AnomalySegLib.anomalies.lesion_volume.VolumeLesions`, seeded);
- **search**: every combination of the candidate thresholds (quantiles of the lesioned volumes'
  in-brain scores), rim erosions (mm), median widths (mm) and minimum finding sizes (ml), each mask made
  by the one rule of :mod:`AnomalySegLib.scoring.operating_point` on the model grid;
- **choice**: the combination with the highest mean Dice over the lesioned volumes among those that
  flag at most ``max_healthy_ml`` and at most ``max_healthy_findings`` findings on *every* unchanged
  healthy scan (ties: the higher threshold, then the larger minimum size). If no combination meets the
  limit, the one with the smallest worst-case excess is taken and ``limit_met`` is false.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from AnomalySegLib.anomalies.lesion_volume import VolumeLesions
from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase
from AnomalySegLib.scoring.operating_point import CONNECTIVITY, CleanUp, apply_operating_point, rim_eroded_region

LOG = logging.getLogger(__name__)
#: Quantile levels of the lesioned volumes' in-brain scores tried as thresholds.
THRESHOLD_QUANTILES = tuple(np.round(np.linspace(0.80, 0.999, 30), 4))


@dataclass(frozen=True)
class SearchRule:
    """Settings of the operating-point search (see the module docstring)."""

    lesion_copies: int = 2
    max_healthy_ml: float = 5.0
    max_healthy_findings: int = 5
    rim_erosion_mm: tuple[float, ...] = (0.0, 2.0, 4.0)
    median_mm: tuple[float, ...] = (0.0, 6.0)
    min_finding_ml: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
    lesions: VolumeLesions = VolumeLesions()
    seed: int = 0

    def to_dict(self) -> dict:
        values = asdict(self)
        values["lesions"] = asdict(self.lesions)
        return values


@dataclass
class SearchResult:
    """The chosen operating point and the evidence for it (JSON-ready via :meth:`to_dict`)."""

    threshold: float
    clean_up: CleanUp
    mean_dice: float
    limit_met: bool
    lesion_dice: dict[str, float]
    lesion_inventory: dict[str, list[dict]]
    healthy: dict[str, dict[str, float]]
    candidates: int
    best_per_clean_up: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "clean_up": self.clean_up.to_dict(),
            "mean_lesion_dice": self.mean_dice,
            "healthy_limit_met": self.limit_met,
            "lesion_dice": self.lesion_dice,
            "lesions": self.lesion_inventory,
            "healthy": self.healthy,
            "combinations_tried": self.candidates,
            "best_per_clean_up": self.best_per_clean_up,
        }


def lesioned_copies(cases: Sequence[ModelSpaceCase], rule: SearchRule, voxel_size_mm: Sequence[float],
                    case_indices: Sequence[int] | None = None) -> tuple[list[ModelSpaceCase], dict[str, list[dict]]]:
    """``rule.lesion_copies`` lesioned copies of each case (ids ``<case>_lesions<n>``) and their lesions.

    Copy ``n`` of the case at position ``i`` (or ``case_indices[i]``) is seeded by ``(rule.seed, i, n)``.
    """
    copies, inventory = [], {}
    indices = range(len(cases)) if case_indices is None else case_indices
    for case_index, case in zip(indices, cases):
        for copy in range(rule.lesion_copies):
            rng = np.random.default_rng([rule.seed, case_index, copy])
            image, labels, drawn = rule.lesions(case.image, case.mask, voxel_size_mm, rng)
            case_id = f"{case.case_id}_lesions{copy}"
            copies.append(ModelSpaceCase(case_id, image, case.mask, labels))
            inventory[case_id] = drawn
    return copies, inventory


def search_operating_point(lesion_scores: Sequence[np.ndarray], lesion_labels: Sequence[np.ndarray],
                           healthy_scores: dict[str, np.ndarray], voxel_size_mm: Sequence[float],
                           rule: SearchRule, lesion_ids: Sequence[str] | None = None) -> SearchResult:
    """The search of the module docstring on scored volumes (all ``[Z, Y, X]`` on the model grid).

    Args:
        lesion_scores, lesion_labels: anomaly scores and truth of the lesioned volumes.
        healthy_scores: case id → anomaly score of each unchanged healthy volume.
        voxel_size_mm: ``(dz, dy, dx)`` of the grid.
        rule: candidates and limits.
        lesion_ids: names of the lesioned volumes (for the evidence).
    """
    if not lesion_scores or not healthy_scores:
        raise ValueError("the operating-point search needs lesioned and healthy volumes")
    lesion_ids = list(lesion_ids or [f"lesion{i}" for i in range(len(lesion_scores))])
    pooled = np.concatenate([score[score > 0] for score in lesion_scores])
    thresholds = np.unique(np.quantile(pooled, THRESHOLD_QUANTILES).astype(np.float64))
    voxel_ml = float(np.prod(voxel_size_mm)) / 1000.0
    truths = [np.asarray(labels, dtype=bool) for labels in lesion_labels]
    min_sizes = np.asarray(sorted(rule.min_finding_ml), dtype=np.float64)
    rows = []  # (rim, median, threshold, min_ml, mean dice, per-lesion dice, healthy ml, healthy findings)
    for rim, median in itertools.product(rule.rim_erosion_mm, rule.median_mm):
        clean_up = CleanUp(rim_erosion_mm=rim, median_mm=median)
        lesion_regions = [rim_eroded_region(s, voxel_size_mm, rim) for s in lesion_scores]
        healthy_regions = {k: rim_eroded_region(s, voxel_size_mm, rim) for k, s in healthy_scores.items()}
        for threshold in thresholds:
            dices = np.empty((len(min_sizes), len(lesion_scores)))
            for n, (score, truth, region) in enumerate(zip(lesion_scores, truths, lesion_regions)):
                sizes, overlaps = _findings(apply_operating_point(score, voxel_size_mm, threshold, clean_up, region),
                                            truth)
                for m, min_ml in enumerate(min_sizes):
                    kept = sizes * voxel_ml >= min_ml
                    predicted, hit = sizes[kept].sum(), overlaps[kept].sum()
                    dices[m, n] = 2.0 * hit / (predicted + truth.sum()) if predicted + truth.sum() else 1.0
            healthy_ml = np.empty((len(min_sizes), len(healthy_scores)))
            healthy_count = np.empty((len(min_sizes), len(healthy_scores)))
            for n, (case_id, score) in enumerate(healthy_scores.items()):
                mask = apply_operating_point(score, voxel_size_mm, threshold, clean_up, healthy_regions[case_id])
                sizes, _ = _findings(mask, None)
                for m, min_ml in enumerate(min_sizes):
                    kept = sizes * voxel_ml >= min_ml
                    healthy_ml[m, n], healthy_count[m, n] = sizes[kept].sum() * voxel_ml, kept.sum()
            for m, min_ml in enumerate(min_sizes):
                rows.append((rim, median, float(threshold), float(min_ml), float(dices[m].mean()), dices[m].copy(),
                             healthy_ml[m].copy(), healthy_count[m].copy()))
    LOG.info("operating-point search: %d combinations", len(rows))

    def excess(row) -> float:
        return float(max(np.max(row[6] / rule.max_healthy_ml), np.max(row[7] / max(rule.max_healthy_findings, 1e-9))))

    feasible = [row for row in rows if excess(row) <= 1.0]
    limit_met = bool(feasible)
    if feasible:
        best = max(feasible, key=lambda row: (row[4], row[2], row[3]))
    else:
        best = min(rows, key=lambda row: (excess(row), -row[4]))
    per_combination: dict[tuple, tuple] = {}
    for row in (feasible or rows):
        key = (row[0], row[1], row[3])
        if key not in per_combination or row[4] > per_combination[key][4]:
            per_combination[key] = row
    best_per_clean_up = [
        {"rim_erosion_mm": key[0], "median_mm": key[1], "min_finding_ml": key[2], "threshold": row[2],
         "mean_lesion_dice": row[4], "max_healthy_ml": float(row[6].max()), "max_healthy_findings": int(row[7].max())}
        for key, row in sorted(per_combination.items())
    ]
    return SearchResult(
        threshold=best[2],
        clean_up=CleanUp(rim_erosion_mm=best[0], median_mm=best[1], min_finding_ml=best[3]),
        mean_dice=best[4],
        limit_met=limit_met,
        lesion_dice=dict(zip(lesion_ids, map(float, best[5]))),
        lesion_inventory={},
        healthy={case_id: {"flagged_ml": float(ml), "findings": int(count)}
                 for case_id, ml, count in zip(healthy_scores, best[6], best[7])},
        candidates=len(rows),
        best_per_clean_up=best_per_clean_up,
    )


def _findings(mask: np.ndarray, truth: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Voxel count of each 26-connected finding of ``mask``, and of its overlap with ``truth``."""
    labels, count = ndimage.label(mask, structure=CONNECTIVITY)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.float64)
    if truth is None:
        return sizes, np.zeros_like(sizes)
    overlaps = np.bincount(labels[truth], minlength=count + 1)[1:].astype(np.float64)
    return sizes, overlaps
