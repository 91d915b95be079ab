"""Metrics against hand-checked arrays and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

import torch
from monai.metrics import compute_dice, compute_roc_auc, get_confusion_matrix
from sklearn.metrics import precision_recall_curve

from AnomalySegLib.metrics import (
    auprc,
    auroc,
    best_dice,
    dice,
    lesion_detection,
    pr_curve,
    volume_error,
    volume_metrics,
    voxel_fpr,
)


def test_dice_hand_checked():
    assert dice(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])) == 0.5
    assert dice(np.array([1, 1, 1, 0]), np.array([1, 1, 1, 0])) == 1.0
    assert dice(np.array([1, 0]), np.array([0, 1])) == 0.0
    assert dice(np.zeros(4), np.zeros(4)) == 1.0  # nothing to find, nothing found


def test_best_dice_hand_checked():
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.6])
    truth = np.array([1, 1, 0, 0, 1], dtype=bool)
    # Thresholds between 0.7 and 0.8 give 2·2/(2+3) = 0.8; between 0.1 and 0.6 give 2·3/(4+3) = 6/7.
    value, threshold = best_dice(scores, truth)
    assert value == pytest.approx(6 / 7)
    assert 0.1 < threshold < 0.6
    assert dice(scores > threshold, truth) == pytest.approx(value)
    assert best_dice(scores, np.zeros(5, dtype=bool)) == (0.0, math.inf)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_dice_equals_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 20, size=500).astype(float)  # heavy ties
    truth = (scores + rng.normal(0, 4, size=500)) > 14
    candidates = np.r_[np.unique(scores), scores.min() - 1]
    brute = max(dice(scores > t, truth) for t in candidates)
    value, threshold = best_dice(scores, truth)
    assert value == pytest.approx(brute)
    assert dice(scores > threshold, truth) == pytest.approx(value)


def test_auroc_and_auprc_hand_checked():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    truth = np.array([0, 0, 1, 1], dtype=bool)
    # 3 of the 4 positive/negative pairs are ordered correctly.
    assert auroc(scores, truth) == pytest.approx(0.75)
    # Ranked: 0.8 (+), 0.4 (−), 0.35 (+), 0.1 (−): AP = ½·1 + ½·(2/3).
    assert auprc(scores, truth) == pytest.approx(5 / 6)
    assert math.isnan(auroc(scores, np.zeros(4, dtype=bool)))
    assert math.isnan(auprc(scores, np.zeros(4, dtype=bool)))


def test_voxel_fpr_hand_checked():
    prediction = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    truth = np.array([1, 0, 0, 0, 0, 0], dtype=bool)
    assert voxel_fpr(prediction, truth) == pytest.approx(2 / 5)
    region = np.array([1, 1, 1, 1, 0, 0], dtype=bool)  # the brain: one false positive is outside
    assert voxel_fpr(prediction, truth, region) == pytest.approx(1 / 3)


def test_volume_metrics():
    rng = np.random.default_rng(3)
    truth = np.zeros((4, 8, 8), dtype=bool)
    truth[1:3, 2:6, 2:6] = True
    scores = truth * 0.6 + rng.random(truth.shape) * 0.5
    result = volume_metrics(scores, truth, threshold=0.55)
    assert result.best_dice == pytest.approx(best_dice(scores, truth)[0])
    assert result.dice == pytest.approx(dice(scores > 0.55, truth))
    assert result.auroc == pytest.approx(1.0) and result.auprc == pytest.approx(1.0)
    assert result.best_dice == 1.0
    assert math.isnan(volume_metrics(scores, truth).dice)
    assert result.detection_rate == 1.0 and result.false_positive_components == 0
    assert result.true_volume_ml == pytest.approx(32 * 0.008)
    assert result.volume_error_ml == pytest.approx((np.count_nonzero(scores > 0.55) - 32) * 0.008)
    assert set(result.to_dict()) == {
        "best_dice", "best_threshold", "auprc", "auroc", "dice", "fpr", "detection_rate",
        "false_positive_components", "true_volume_ml", "volume_error_ml", "volume_error_relative",
    }


def test_lesion_detection_hand_checked():
    truth = np.zeros((5, 10, 10), dtype=bool)
    truth[1, 1:3, 1:3] = True  # lesion A
    truth[2, 3, 3] = True  # touches A at a corner: the same 26-connected lesion
    truth[3, 7:9, 7:9] = True  # lesion B
    truth[0, 8, 1] = True  # lesion C, one voxel
    prediction = np.zeros_like(truth)
    prediction[1, 2, 2] = True  # hits A
    prediction[0, 8, 1] = True  # hits C
    prediction[4, 0, 9] = True  # a finding with no lesion
    prediction[4, 5, 5] = True  # another one
    result = lesion_detection(prediction, truth)
    assert (result.lesions, result.detected, result.false_positive_components) == (3, 2, 2)
    assert result.detection_rate == pytest.approx(2 / 3)
    assert lesion_detection(prediction, truth, min_overlap_voxels=2).detected == 0
    assert math.isnan(lesion_detection(prediction, np.zeros_like(truth)).detection_rate)


def test_volume_error_hand_checked():
    prediction = np.array([1, 1, 1, 0, 0], dtype=bool)
    truth = np.array([1, 1, 0, 0, 0], dtype=bool)
    assert volume_error(prediction, truth, voxel_ml=0.008) == pytest.approx((0.008, 0.5))
    difference, relative = volume_error(prediction, np.zeros(5, dtype=bool))
    assert difference == 3 and math.isnan(relative)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A MONAI metric input ``[B=1, C=1, *spatial]``."""
    return torch.from_numpy(array.astype(np.float32))[None, None]


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_agree_with_monai_on_random_volumes(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((6, 12, 12)) < 0.2
    scores = rng.random(truth.shape) + 0.5 * truth
    prediction = scores > 0.8
    monai_dice = compute_dice(as_tensor(prediction), as_tensor(truth), include_background=True)
    assert dice(prediction, truth) == pytest.approx(float(monai_dice))
    tp, fp, tn, fn = get_confusion_matrix(as_tensor(prediction), as_tensor(truth))[0, 0].tolist()
    assert voxel_fpr(prediction, truth) == pytest.approx(fp / (fp + tn))
    assert auroc(scores, truth) == pytest.approx(compute_roc_auc(torch.from_numpy(scores.ravel()),
                                                                 torch.from_numpy(truth.ravel().astype(int))))
    brute = max(float(compute_dice(as_tensor(scores > t), as_tensor(truth))) for t in np.unique(scores)[:-1])
    assert best_dice(scores, truth)[0] == pytest.approx(max(brute, dice(np.ones_like(truth), truth)))


def test_auprc_is_average_precision_by_hand_and_pr_curve_matches_scikit_learn():
    rng = np.random.default_rng(4)
    truth = rng.random(300) < 0.3
    scores = rng.random(300) + 0.4 * truth  # continuous: no ties
    order = np.argsort(-scores)
    hits = truth[order]
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    assert auprc(scores, truth) == pytest.approx(precision_at_hit.mean())
    precision, recall = pr_curve(scores, truth)
    expected_precision, expected_recall, _ = precision_recall_curve(truth, scores)
    np.testing.assert_allclose(precision, expected_precision)
    np.testing.assert_allclose(recall, expected_recall)
    assert pr_curve(scores, np.zeros(300, dtype=bool))[0].size == 0
