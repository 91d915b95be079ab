"""Voxel-wise segmentation metrics of the paper's protocol (per volume, on the model grid).

⌈Dice⌉ is the best Dice any single threshold achieves on a volume (an oracle threshold).
:func:`best_dice` computes it exactly from the sorted scores (every distinct score is a candidate
threshold); :func:`best_dice_bisection` is the paper's code's definition (10 steps of interval halving
on ``[0, max score]``), the value its Table 1 reports, which the exact one bounds from above. AUPRC
(average precision) and AUROC come from scikit-learn. Lesion-wise detection uses SciPy's connected
components (26-connected, as lesions touching at a corner are one lesion in 3D).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


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


PAPER_BISECTION_STEPS = 10  # find_best_val(..., max_steps=10) in the authors' utils_eval.py


def best_dice_bisection(
    scores: np.ndarray, truth: np.ndarray, steps: int = PAPER_BISECTION_STEPS
) -> tuple[float, float]:
    """⌈Dice⌉ as the paper's code computes it: a search by interval halving.

    Starting from ``[0, max(scores)]`` (``[lo, 1]`` if that interval is empty), each step measures
    Dice(scores > q, truth) at the quarter points ``q`` of the interval, keeps the best value seen, and
    continues in the half on the side of the better quarter (the lower one on ties). Written here
    because no library offers this search; it reproduces ``find_best_val`` of
    FinnBehrendt/Supervised-Anomaly-Detection-with-Diffusion-Models (``src/utils/utils_eval.py``).

    Args:
        scores: anomaly scores ``[Z, Y, X]`` (any shape), ≥ 0 as the paper's maps are.
        truth: boolean ground truth, same shape.
        steps: halving steps (the paper: 10).

    Returns:
        ``(best_dice, threshold)``; ``(0.0, 0.0)`` when ``truth`` is empty (the paper's code counts
        such volumes as 0).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    truth = np.asarray(truth, dtype=bool).ravel()
    positives = int(truth.sum())
    if positives == 0:
        return 0.0, 0.0

    def dice_above(threshold: float) -> float:
        predicted = scores > threshold
        return 2.0 * int(np.count_nonzero(predicted & truth)) / (int(predicted.sum()) + positives)

    low, high = 0.0, float(scores.max())
    best, best_threshold = 0.0, 0.0
    for _ in range(steps):
        if low == high:
            high = 1.0
        width = high - low
        lower_quarter, upper_quarter = low + 0.25 * width, low + 0.75 * width
        lower_value, upper_value = dice_above(lower_quarter), dice_above(upper_quarter)
        if lower_value >= upper_value:
            if lower_value >= best:
                best, best_threshold = lower_value, lower_quarter
            high = low + 0.5 * width
        else:
            if upper_value >= best:
                best, best_threshold = upper_value, upper_quarter
            low = low + 0.5 * width
    return best, best_threshold


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


def pr_curve(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall over all thresholds (scikit-learn); two empty arrays when ``truth`` is empty."""
    truth = np.asarray(truth, dtype=bool).ravel()
    if not truth.any():
        return np.empty(0), np.empty(0)
    precision, recall, _ = precision_recall_curve(truth, np.asarray(scores, dtype=np.float64).ravel())
    return precision, recall


@dataclass(frozen=True)
class LesionDetection:
    """Lesion-wise counts: ground-truth components hit by the prediction, and predicted components
    touching no ground truth (false-positive findings)."""

    lesions: int
    detected: int
    false_positive_components: int

    @property
    def detection_rate(self) -> float:
        """detected / lesions; NaN without lesions."""
        return float("nan") if self.lesions == 0 else self.detected / self.lesions


def lesion_detection(prediction: np.ndarray, truth: np.ndarray, min_overlap_voxels: int = 1) -> LesionDetection:
    """Count 26-connected lesions of ``truth`` overlapped by at least ``min_overlap_voxels`` predicted voxels.

    Args:
        prediction: boolean ``[Z, Y, X]``.
        truth: boolean ``[Z, Y, X]``.
        min_overlap_voxels: predicted voxels a lesion needs to count as detected.
    """
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    structure = np.ones((3,) * truth.ndim, dtype=bool)
    lesion_labels, lesions = ndimage.label(truth, structure)
    hits = np.bincount(lesion_labels[prediction].ravel(), minlength=lesions + 1)[1:]
    found_labels, found = ndimage.label(prediction, structure)
    touching = np.unique(found_labels[truth & prediction])
    false_positives = found - int(np.count_nonzero(touching))
    return LesionDetection(int(lesions), int(np.count_nonzero(hits >= min_overlap_voxels)), int(false_positives))


def volume_error(prediction: np.ndarray, truth: np.ndarray, voxel_ml: float = 1.0) -> tuple[float, float]:
    """Predicted minus true volume, absolute (``voxel_ml`` × voxels, ml) and relative to the true volume.

    Returns:
        ``(difference_ml, relative)``; ``relative`` is NaN when ``truth`` is empty.
    """
    predicted = int(np.count_nonzero(prediction))
    true = int(np.count_nonzero(truth))
    relative = float("nan") if true == 0 else (predicted - true) / true
    return (predicted - true) * voxel_ml, relative


@dataclass(frozen=True)
class VolumeMetrics:
    """Metrics of one volume. The metrics at a threshold (``dice`` to ``volume_error_relative``) are NaN
    when no threshold was given; volumes are in ml."""

    best_dice: float
    best_threshold: float
    auprc: float
    auroc: float
    dice: float
    fpr: float
    detection_rate: float = float("nan")
    false_positive_components: float = float("nan")
    true_volume_ml: float = float("nan")
    volume_error_ml: float = float("nan")
    volume_error_relative: float = float("nan")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def volume_metrics(
    scores: np.ndarray,
    truth: np.ndarray,
    threshold: float | None = None,
    brain_mask: np.ndarray | None = None,
    voxel_ml: float = 0.008,
    prediction: np.ndarray | None = None,
) -> VolumeMetrics:
    """The paper's per-volume metrics over all voxels of the grid (scores are 0 outside the brain).

    Args:
        scores: anomaly score ``[Z, Y, X]``.
        truth: ground truth, same shape.
        threshold: a calibrated threshold for the metrics of ``scores > threshold`` (e.g. the bundle's).
        brain_mask: restricts the FPR's negatives to the brain.
        voxel_ml: volume of one voxel in ml (default: the model grid's 2 mm voxels, 0.008 ml).
        prediction: the mask at ``threshold`` when an operating-point rule made it (clean-up included);
            default ``scores > threshold``.
    """
    truth = np.asarray(truth, dtype=bool)
    best, best_threshold = best_dice(scores, truth)
    true_volume = int(np.count_nonzero(truth)) * voxel_ml
    ranking = (best, best_threshold, auprc(scores, truth), auroc(scores, truth))
    if threshold is None:
        return VolumeMetrics(*ranking, float("nan"), float("nan"), true_volume_ml=true_volume)
    prediction = np.asarray(scores) > threshold if prediction is None else np.asarray(prediction, dtype=bool)
    detection = lesion_detection(prediction, truth)
    difference_ml, relative = volume_error(prediction, truth, voxel_ml)
    return VolumeMetrics(
        *ranking,
        dice=dice(prediction, truth),
        fpr=voxel_fpr(prediction, truth, brain_mask),
        detection_rate=detection.detection_rate,
        false_positive_components=float(detection.false_positive_components),
        true_volume_ml=true_volume,
        volume_error_ml=difference_ml,
        volume_error_relative=relative,
    )
