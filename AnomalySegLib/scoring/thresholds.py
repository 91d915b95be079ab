"""Thresholds for binarising anomaly scores: Dice-optimal on labelled data, FPR-based on healthy data."""

from __future__ import annotations

import numpy as np

from AnomalySegLib.metrics import dice


def dice_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Dice of ``scores > threshold`` against boolean ``labels``."""
    return dice(np.asarray(scores) > threshold, labels)


def bisection_dice_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    low: float = 0.0,
    high: float | None = None,
    steps: int = 10,
) -> tuple[float, float]:
    """The Dice-maximising threshold by interval halving, as in the SADM code (after Zimmerer et al.).

    Each step evaluates Dice at the quarter points of the current interval, keeps the half around the
    better one and remembers the best point seen. Ten steps narrow [0, max] by 2¹⁰. Assumes Dice is
    unimodal in the threshold, which pooled validation voxels usually make true.

    Args:
        scores: anomaly scores (any shape; flattened), e.g. pooled validation voxels.
        labels: ground truth, same size.
        low, high: search interval (default [0, max(scores)]).
        steps: halvings.

    Returns:
        ``(best_dice, threshold)``.
    """
    scores = np.asarray(scores, dtype=np.float32).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.size != labels.size:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if high is None:
        high = float(scores.max()) if scores.size else 1.0
    if high <= low:
        high = low + 1.0
    best_dice, best_threshold = -1.0, low
    for _ in range(steps):
        quarter_low = low + 0.25 * (high - low)
        quarter_high = low + 0.75 * (high - low)
        dice_low = dice_at(scores, labels, quarter_low)
        dice_high = dice_at(scores, labels, quarter_high)
        centre = 0.5 * (low + high)
        if dice_low >= dice_high:
            candidate, value, high = quarter_low, dice_low, centre
        else:
            candidate, value, low = quarter_high, dice_high, centre
        if value >= best_dice:
            best_dice, best_threshold = value, candidate
    return best_dice, float(best_threshold)


def fpr_thresholds(healthy_scores: np.ndarray, rates: tuple[float, ...] = (0.01, 0.05, 0.10)) -> dict[float, float]:
    """Thresholds at which at most ``rate`` of healthy voxels score above the threshold.

    Args:
        healthy_scores: scores of in-brain voxels of healthy volumes (flattened).
        rates: target voxel false-positive rates.

    Returns:
        ``{rate: threshold}``; ``mean(healthy_scores > threshold) ≤ rate`` for each, and the
        threshold is the smallest healthy score with that property (the (1 − rate) quantile).
    """
    values = np.sort(np.asarray(healthy_scores, dtype=np.float64).ravel())
    if values.size == 0:
        raise ValueError("no healthy voxels to calibrate on")
    result = {}
    for rate in rates:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"false-positive rate must be in (0, 1), got {rate}")
        # Smallest index i with #(values > values[i]) ≤ rate·n, i.e. n − (last index of values[i] + 1) ≤ rate·n.
        allowed = int(np.floor(rate * values.size))
        index = values.size - 1 - allowed
        threshold = values[max(index, 0)]
        result[rate] = float(threshold)
    return result
