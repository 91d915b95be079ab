"""Calibration: the threshold searches on hand-made arrays, and calibrate() on real volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from AnomalySegLib.bundle import ModelBundle
from AnomalySegLib.calibration import apply_calibration, calibrate, describe
from AnomalySegLib.diffusion.reconstruction import RECON_COMPONENT, build_network
from AnomalySegLib.diffusion.spec import ReconSpec
from AnomalySegLib.errors import InputError
from AnomalySegLib.metrics import best_dice, dice
from AnomalySegLib.networks.seg_unet import SegUnet, SegUnetSpec
from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase
from AnomalySegLib.scoring.thresholds import bisection_dice_threshold, dice_at, fpr_thresholds
from AnomalySegLib.scoring.volume import SEG_COMPONENT, AnomalyScorer
from AnomalySegLib.training.config import load_config


def test_bisection_finds_the_separating_threshold():
    # Anomalies score 0.6–0.9, normal voxels 0–0.4: any threshold in [0.4, 0.6) gives Dice 1.
    scores = np.r_[np.linspace(0.0, 0.4, 900), np.linspace(0.6, 0.9, 100)]
    truth = np.r_[np.zeros(900, dtype=bool), np.ones(100, dtype=bool)]
    value, threshold = bisection_dice_threshold(scores, truth)
    assert value == 1.0 and 0.4 <= threshold < 0.6
    assert dice_at(scores, truth, threshold) == value


def test_bisection_is_close_to_the_exact_optimum_on_noisy_scores():
    rng = np.random.default_rng(0)
    truth = rng.random(20000) < 0.05
    scores = np.clip(0.3 + 0.3 * truth + 0.12 * rng.standard_normal(20000), 0, None)
    value, threshold = bisection_dice_threshold(scores, truth)
    exact, _ = best_dice(scores, truth)
    assert value == pytest.approx(dice(scores > threshold, truth))
    assert exact - 0.02 <= value <= exact


def test_bisection_quarter_points_by_hand():
    # Range [0, 1]: step 1 compares 0.25 and 0.75 and keeps [0, 0.5]; step 2 compares 0.125 and 0.375.
    scores = np.array([0.1, 0.2, 0.3, 0.35, 1.0])
    truth = np.array([False, False, True, True, False])
    value, threshold = bisection_dice_threshold(scores, truth, steps=2)
    # Dice(> 0.25) = 2·2/(3+2) = 0.8, Dice(> 0.75) = 0, Dice(> 0.125) = 2·2/(4+2), Dice(> 0.375) = 0.
    assert threshold == 0.25 and value == pytest.approx(0.8)


def test_fpr_thresholds_hand_checked():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    thresholds = fpr_thresholds(scores, (0.01, 0.05, 0.10))
    assert thresholds == {0.01: 99.0, 0.05: 95.0, 0.10: 90.0}
    for rate, threshold in thresholds.items():
        assert np.mean(scores > threshold) <= rate < np.mean(scores >= threshold)
    tied = np.r_[np.zeros(95), np.ones(5)]
    assert fpr_thresholds(tied, (0.01, 0.05))[0.01] == 1.0  # no threshold flags exactly 1 % of ties
    with pytest.raises(ValueError, match="rate"):
        fpr_thresholds(scores, (1.5,))


@pytest.fixture(scope="module")
def untrained_bundle() -> ModelBundle:
    """Real (untrained, seeded) networks of the tiny configs: calibration does not depend on model quality."""
    torch.manual_seed(0)
    spec = ReconSpec.from_dict(load_config("recon_tiny")["model"])
    seg_config = SegUnetSpec.from_dict(load_config("seg_tiny")["model"])
    bundle = ModelBundle(description={"noise_levels": [250, 500, 750], "scoring": {"beta": 0.5}})
    bundle.add_component(RECON_COMPONENT, spec.to_dict(), build_network(spec).state_dict())
    bundle.add_component(SEG_COMPONENT, seg_config.to_dict(), SegUnet(seg_config).state_dict())
    return bundle


@pytest.fixture(scope="module")
def untrained_scorer(untrained_bundle) -> AnomalyScorer:
    return AnomalyScorer.from_bundle(untrained_bundle, "cpu", "fp32")


def _with_bright_ball(case: ModelSpaceCase) -> ModelSpaceCase:
    """A real brain with a bright ball (radius 6 voxels) in the right hemisphere, labelled."""
    z, y, x = np.indices(case.image.shape)
    ball = ((z - 25) ** 2 + (y - 48) ** 2 + (x - 30) ** 2 <= 36) & case.mask
    image = np.where(ball, 1.0, case.image).astype(np.float32)
    return ModelSpaceCase(f"{case.case_id}_ball", image, case.mask, ball)


def test_calibrate_on_real_volumes_reproduces_its_dice(untrained_scorer, healthy_cases):
    validation = [_with_bright_ball(case) for case in healthy_cases[:2]]
    result = calibrate(untrained_scorer, validation, healthy_cases[2:3], seed=3)
    assert result.validation_cases == [case.case_id for case in validation]
    pooled_scores, pooled_truth = [], []
    for case in validation:
        score = untrained_scorer.score(case.image, case.mask, seed=3).anomaly_score
        pooled_scores.append(score.ravel())
        pooled_truth.append(case.labels.ravel())
        assert result.per_case[case.case_id]["dice"] == pytest.approx(dice(score > result.threshold, case.labels))
    reproduced = dice(np.concatenate(pooled_scores) > result.threshold, np.concatenate(pooled_truth))
    assert reproduced == pytest.approx(result.validation_dice, abs=1e-12)
    assert 0 < result.validation_dice <= 1
    healthy = untrained_scorer.score(healthy_cases[2].image, healthy_cases[2].mask, seed=3)
    in_brain = healthy.anomaly_score[healthy.mask]
    assert set(result.healthy_thresholds) == {"fpr1", "fpr5", "fpr10"}
    for preset, rate in (("fpr1", 0.01), ("fpr5", 0.05), ("fpr10", 0.10)):
        threshold = result.healthy_thresholds[preset]
        assert np.mean(in_brain > threshold) <= rate < np.mean(in_brain >= threshold)

    calibrated = apply_calibration(ModelBundle(description={"scoring": {"beta": 0.5}}), result)
    scoring = calibrated.description["scoring"]
    assert scoring["beta"] == 0.5 and scoring["thresholds"]["val"] == result.threshold
    assert scoring["thresholds"]["fpr5"] == result.healthy_thresholds["fpr5"]
    assert scoring["calibration"]["validation_dice"] == result.validation_dice
    assert scoring["calibration"]["healthy_cases"] == [healthy_cases[2].case_id]
    assert "threshold" in describe(result)


def test_calibrate_chooses_beta_on_validation(untrained_bundle, untrained_scorer, healthy_cases):
    validation = [_with_bright_ball(case) for case in healthy_cases[:2]]
    result = calibrate(untrained_scorer, validation, seed=3, beta_candidates=(0.0, 0.5, 1.0))
    assert set(result.beta_search) == {0.0, 0.5, 1.0}
    assert result.beta_search[result.beta] == max(result.beta_search.values())
    assert result.validation_dice == pytest.approx(result.beta_search[result.beta], abs=1e-12)
    # The untrained SegUnet is noise: the reconstruction term alone finds the bright ball best.
    assert result.beta_search[1.0] > result.beta_search[0.0]

    calibrated = apply_calibration(untrained_bundle, result)
    assert calibrated.description["scoring"]["beta"] == result.beta
    assert set(calibrated.description["scoring"]["calibration"]["beta_search"]["validation_dice"]) == {"0", "0.5", "1"}
    rescorer = AnomalyScorer.from_bundle(calibrated, "cpu", "fp32")
    assert rescorer.config.beta == result.beta
    pooled = np.concatenate([rescorer.score(c.image, c.mask, seed=3).anomaly_score.ravel() for c in validation])
    truth = np.concatenate([c.labels.ravel() for c in validation])
    assert dice(pooled > result.threshold, truth) == pytest.approx(result.validation_dice, abs=1e-12)
    assert "beta" in describe(result)

    with pytest.raises(InputError, match="beta"):
        calibrate(untrained_scorer, validation, beta_candidates=(1.5,))
    stage1_only = AnomalyScorer(untrained_scorer.reconstructor, None)
    with pytest.raises(InputError, match="Stage II"):
        calibrate(stage1_only, validation, beta_candidates=(0.5,))


def test_calibrate_refuses_cases_without_labels(untrained_scorer, healthy_cases):
    with pytest.raises(InputError, match="ground truth"):
        calibrate(untrained_scorer, healthy_cases[:1])
    with pytest.raises(InputError, match="at least one"):
        calibrate(untrained_scorer, [])


def test_scorer_combines_the_terms_as_documented(untrained_scorer, healthy_cases):
    case = _with_bright_ball(healthy_cases[0])
    scores = untrained_scorer.score(case.image, case.mask, seed=5)
    beta = untrained_scorer.config.beta
    expected = (beta * scores.reconstruction_term + (1 - beta) * scores.segmentation_probability) * case.mask
    np.testing.assert_allclose(scores.anomaly_score, expected, atol=1e-6)
    assert not scores.anomaly_score[~case.mask].any()
    assert scores.reconstruction.shape == case.image.shape
    assert set(scores.timings_s) == {"reconstruction", "segmentation_network", "scoring"}
    again = untrained_scorer.score(case.image, case.mask, seed=5)
    np.testing.assert_array_equal(again.anomaly_score, scores.anomaly_score)  # seeded

    input_only = AnomalyScorer(
        untrained_scorer.reconstructor, SegUnet(SegUnetSpec(depth=3, base_channels=8, inputs="input"))
    )
    first = input_only.score(case.image, case.mask, seed=5).segmentation_probability
    other_noise = input_only.score(case.image, case.mask, seed=6).segmentation_probability
    np.testing.assert_array_equal(first, other_noise)  # ŷ of the input-only net ignores x̂
