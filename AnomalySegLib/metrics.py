"""Voxel-wise segmentation metrics of the paper's protocol (per volume, on the model grid).

⌈Dice⌉ is the best Dice any single threshold achieves on a volume (an oracle threshold). The paper's
code approximates it by interval halving; here it is computed exactly from the sorted scores (every
distinct score is a candidate threshold), so it is an upper bound of the code's value. AUPRC
(average precision) and AUROC come from scikit-learn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """2|P∩G| / (|P| + |G|) of two boolean arrays; 1 when both are empty."""
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(prediction & truth)) / total


def best_dice(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """⌈Dice⌉: the maximum over thresholds t of Dice(scores > t, truth), and the t reaching it.

    Exact: sorts the scores once, so O(n log n) for n voxels. Thresholds are placed at distinct score
    values (prediction = scores strictly above the next lower distinct value), returned as the midpoint
    between that value and the one below it (or just below the minimum).

    Returns:
        ``(best_dice, threshold)``; ``(0.0, inf)`` when ``truth`` is empty.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    truth = np.asarray(truth, dtype=bool).ravel()
    positives = int(truth.sum())
    if positives == 0:
        return 0.0, float("inf")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_positives = np.cumsum(truth[order])
    # Only the last position of each run of tied scores is a valid cut (ties go together).
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    predicted = np.arange(1, scores.size + 1)
    dices = np.where(last_of_run, 2.0 * true_positives / (predicted + positives), -1.0)
    cut = int(np.argmax(dices))
    below = sorted_scores[cut + 1] if cut + 1 < scores.size else sorted_scores[cut] - 1.0
    return float(dices[cut]), float(0.5 * (sorted_scores[cut] + below))


def auprc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision); NaN when ``truth`` is empty."""
    truth = np.asarray(truth, dtype=bool).ravel()
    if not truth.any():
        return float("nan")
    return float(average_precision_score(truth, np.asarray(scores, dtype=np.float64).ravel()))


def auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve; NaN unless ``truth`` has both classes."""
    truth = np.asarray(truth, dtype=bool).ravel()
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, np.asarray(scores, dtype=np.float64).ravel()))


def voxel_fpr(prediction: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> float:
    """Fraction of negative voxels (inside ``region`` if given, e.g. the brain mask) predicted positive."""
    prediction = np.asarray(prediction, dtype=bool)
    negatives = ~np.asarray(truth, dtype=bool)
    if region is not None:
        negatives &= np.asarray(region, dtype=bool)
    count = int(negatives.sum())
    return float("nan") if count == 0 else int(np.count_nonzero(prediction & negatives)) / count


@dataclass(frozen=True)
class VolumeMetrics:
    """Metrics of one volume. ``dice`` and ``fpr`` are NaN when no threshold was given."""

    best_dice: float
    best_threshold: float
    auprc: float
    auroc: float
    dice: float
    fpr: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def volume_metrics(
    scores: np.ndarray,
    truth: np.ndarray,
    threshold: float | None = None,
    brain_mask: np.ndarray | None = None,
) -> VolumeMetrics:
    """The paper's per-volume metrics over all voxels of the grid (scores are 0 outside the brain).

    Args:
        scores: anomaly score ``[Z, Y, X]``.
        truth: ground truth, same shape.
        threshold: a calibrated threshold for ``dice`` and ``fpr`` (e.g. the bundle's).
        brain_mask: restricts the FPR's negatives to the brain.
    """
    best, best_threshold = best_dice(scores, truth)
    if threshold is None:
        at_threshold, fpr = float("nan"), float("nan")
    else:
        at_threshold = dice(np.asarray(scores) > threshold, truth)
        fpr = voxel_fpr(np.asarray(scores) > threshold, truth, brain_mask)
    return VolumeMetrics(best, best_threshold, auprc(scores, truth), auroc(scores, truth), at_threshold, fpr)
