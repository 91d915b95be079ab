"""A precision-recall curve over voxels pooled from many volumes, in constant memory, and its picture.

Pooling every voxel of a dataset (BraTS: ~1250 volumes × 460 k voxels) does not fit in memory, so
positive and negative voxel scores are accumulated in fixed histograms (scikit-learn's
``precision_recall_curve`` needs all scores at once). The per-volume AUPRC of the paper's protocol is
computed exactly by :func:`AnomalySegLib.metrics.auprc`; this curve is only for the picture and a pooled
summary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from AnomalySegLib.io.atomic import atomic_output

#: Score histogram bins over [0, 1] (anomaly scores are SSIM dissimilarities and probabilities).
DEFAULT_BINS = 2000


class PooledPRCurve:
    """Histograms of the scores of positive and negative voxels; scores are clipped to [0, 1]."""

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        self.edges = np.linspace(0.0, 1.0, bins + 1)
        self.positives = np.zeros(bins, dtype=np.int64)
        self.negatives = np.zeros(bins, dtype=np.int64)

    def add(self, scores: np.ndarray, truth: np.ndarray) -> None:
        """Add one volume's voxels (``scores`` and boolean ``truth`` of the same shape)."""
        scores = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
        truth = np.asarray(truth, dtype=bool).ravel()
        self.positives += np.histogram(scores[truth], self.edges)[0]
        self.negatives += np.histogram(scores[~truth], self.edges)[0]

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(precision, recall)`` at every bin edge from the top down (predicted = score in a higher bin).

        Empty arrays when no positive voxel was added.
        """
        total_positives = int(self.positives.sum())
        if total_positives == 0:
            return np.empty(0), np.empty(0)
        true_positives = np.cumsum(self.positives[::-1])
        predicted = true_positives + np.cumsum(self.negatives[::-1])
        keep = predicted > 0
        return true_positives[keep] / predicted[keep], true_positives[keep] / total_positives

    def average_precision(self) -> float:
        """Σ (Rₙ − Rₙ₋₁) Pₙ over the binned curve (scikit-learn's definition); NaN without positives."""
        precision, recall = self.curve()
        if precision.size == 0:
            return float("nan")
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def write_pr_figure(curves: dict[str, PooledPRCurve], path: str | Path, title: str, overwrite: bool = False) -> Path:
    """A PNG of the pooled PR curve of each variant (legend: variant and its pooled AP)."""
    figure = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for name, pooled in curves.items():
        precision, recall = pooled.curve()
        if precision.size:
            axes.plot(recall, precision, label=f"{name} (pooled AP {pooled.average_precision():.3f})")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    if axes.lines:
        axes.legend(loc="upper right")
    else:
        axes.text(0.5, 0.5, "no labelled anomaly voxels", ha="center", va="center")
    with atomic_output(path, overwrite) as temp:
        figure.savefig(temp, format="png")
    return Path(path)
