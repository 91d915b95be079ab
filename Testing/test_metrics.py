"""Metrics against hand-checked arrays and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from AnomalySegLib.metrics import auprc, auroc, best_dice, dice, voxel_fpr, volume_metrics


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
    assert set(result.to_dict()) == {"best_dice", "best_threshold", "auprc", "auroc", "dice", "fpr"}
