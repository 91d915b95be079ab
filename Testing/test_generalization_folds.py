"""The generalization benchmark says what each held-out scan was to the model, refuses a fold whose model
trained on a scan the fold holds out (it would measure something easier than unseen data), and measures what
a tumour answer rests on; its held-out tumour-like lesions are real 3D tumours in a real brain."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from generalization import (AWAY_FROM_TUMOUR_MM, Case, check_cache_model, held_out_roles,  # noqa: E402
                            insert_tumour, scored, training_record, training_words, tumour_diagnosis_row)

from AnomalySegLib.bundle import load_bundle  # noqa: E402
from AnomalySegLib.pipeline import default_model_path  # noqa: E402
from AnomalySegLib.scoring.volume import AnomalyScorer  # noqa: E402


def test_held_out_roles_come_from_the_recipe_record_of_the_bundled_model():
    bundle = load_bundle(default_model_path())
    recipe = bundle.description["provenance"]["default_model"]
    roles = held_out_roles(bundle, [*recipe["calibration_sources"], *recipe["test_sources"]])
    assert roles == {**{name: "calibration" for name in recipe["calibration_sources"]},
                     **{name: "test" for name in recipe["test_sources"]}}


def test_a_fold_that_holds_out_a_training_scan_is_refused():
    bundle = load_bundle(default_model_path())
    trained = bundle.description["provenance"]["default_model"]["training_sources"][0]
    with pytest.raises(SystemExit, match=trained):
        held_out_roles(bundle, [trained])


def test_a_fold_states_how_long_its_model_trained():
    bundle = load_bundle(default_model_path())
    recipe = bundle.description["provenance"]["default_model"]
    words = training_words(training_record(bundle))
    assert f"Stage I {recipe['stage1']['steps']} steps in {recipe['budget_minutes']['stage1']:g} min" in words
    assert f"Stage II {recipe['stage2']['steps']} steps" in words
    assert ", ".join(recipe["training_sources"]) in words
    assert training_words({}) == ""


def test_tumour_diagnosis_separates_the_answer_in_the_lesion_from_firings_away_from_it(healthy_cases):
    """A real healthy brain with a brightened ball as the "tumour"; ŷ is set by hand to 0.9 in the ball and in a
    cube far from it, so every number of the row is known; the x̂ := x column runs the bundled SegUnet."""
    healthy = healthy_cases[0]
    z, y, x = np.indices(healthy.image.shape)
    centre = np.argwhere(healthy.mask).mean(axis=0).round().astype(int)
    ball = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= 16) & healthy.mask
    cube = np.zeros_like(ball)
    corner = centre + np.array([0, 0, 14])  # 28 mm lateral of the ball's centre: 20 mm beyond its edge
    cube[corner[0]:corner[0] + 3, corner[1]:corner[1] + 3, corner[2]:corner[2] + 3] = True
    assert (cube & healthy.mask).sum() == 27 and not (cube & ball).any()
    image = np.where(ball, np.minimum(healthy.image + 0.3, 1.0), healthy.image).astype(np.float32)
    image[cube] = 1.0  # the firing away from the "tumour" is the brightest tissue (as an enhancing vessel)
    case = Case("ball", image, healthy.mask, ball, {})
    probability = np.where(ball | cube, 0.9, 0.0).astype(np.float32)
    scores = {"mask": healthy.mask, "probability": probability, "reconstruction": healthy.image}
    scorer = AnomalyScorer.from_bundle(load_bundle(default_model_path()), device="cpu")

    row = tumour_diagnosis_row(scorer, case, scores)

    assert AWAY_FROM_TUMOUR_MM < 20
    assert row["tumour_probability"] == pytest.approx(0.9)
    assert row["tumour_fires_pct"] == 100
    assert row["tumour_residual"] == pytest.approx(float((image - healthy.image)[ball].mean()), abs=1e-6)
    assert row["away_fires_ml"] == pytest.approx(27 * 8e-3)
    assert row["away_residual"] == pytest.approx(float((image - healthy.image)[cube].mean()), abs=1e-6)
    assert row["away_intensity"] == pytest.approx(float(image[cube].mean()), abs=1e-6)
    depth = ndimage.distance_transform_edt(healthy.mask, sampling=2.0)
    assert depth[cube].min() > 4 and row["away_rim_pct"] == 0  # deep inside the brain, not at its rim
    assert row["away_bright_pct"] == 100
    normal = healthy.mask & (ndimage.distance_transform_edt(~ball, sampling=2.0) > AWAY_FROM_TUMOUR_MM)
    brightest = normal & (image >= np.percentile(image[normal], 99))  # saturated tissue ties at the top
    assert brightest.sum() > 27 and row["brightest_fires_pct"] == pytest.approx(100 * 27 / brightest.sum())
    assert row["probability_best_dice"] == pytest.approx(2 * ball.sum() / (2 * ball.sum() + 27))
    assert 0.0 <= row["no_residual_best_dice"] <= 1.0


def test_held_out_tumour_like_lesions_in_a_real_brain(healthy_cases):
    healthy = healthy_cases[0]
    host = Case("host", healthy.image, healthy.mask, None, {})
    tumour = insert_tumour(host, 1, seed=5)
    again = insert_tumour(host, 1, seed=5)
    assert tumour.name == "host+tumour_wm_1" and np.array_equal(tumour.image, again.image)
    assert tumour.labels.sum() >= 20 and not (tumour.labels & ~host.mask).any()
    assert np.array_equal(tumour.image[~host.mask], np.zeros_like(tumour.image[~host.mask]))
    change = tumour.image - host.image
    assert change[tumour.labels].max() > 0.05 or change[tumour.labels].min() < -0.05  # it is visible
    # Beyond the tumour and its oedema only the mass effect's displacement changes the image, and it fades.
    far = ~ndimage.binary_dilation(tumour.labels, iterations=8) & host.mask
    assert np.abs(change[far]).mean() < 0.01
    assert insert_tumour(host, 0, seed=5).name == "host+tumour_gm_0"


class CountingScorer:
    """The real bundled scorer, counting its calls (to see whether ``scored`` used its cache)."""

    def __init__(self, scorer: AnomalyScorer) -> None:
        self.scorer, self.calls = scorer, 0

    def score(self, *args, **kwargs):
        self.calls += 1
        return self.scorer.score(*args, **kwargs)


def test_cached_scores_are_reused_only_for_the_same_input_and_model(healthy_cases, tmp_path):
    healthy = healthy_cases[0]
    scorer = CountingScorer(AnomalyScorer.from_bundle(load_bundle(default_model_path()), device="cpu"))
    case = Case("scan", healthy.image, healthy.mask, None, {})
    first = scored(scorer, case, tmp_path, "fold")
    again = scored(scorer, case, tmp_path, "fold")
    assert scorer.calls == 1 and all(np.array_equal(first[key], again[key]) for key in first)
    assert set(first) == {"reconstruction", "score", "mask", "probability"}
    # Same name, other input (a generator changed): scored again, not read from the cache.
    changed = Case("scan", np.clip(healthy.image * 1.1, 0, 1).astype(np.float32), healthy.mask, None, {})
    scored(scorer, changed, tmp_path, "fold")
    assert scorer.calls == 2
    scored(scorer, changed, tmp_path, "fold")
    assert scorer.calls == 2
    # A fold folder remembers its model and refuses another one.
    check_cache_model(tmp_path / "fold", {"recon": "a", "seg": "b"})
    check_cache_model(tmp_path / "fold", {"recon": "a", "seg": "b"})
    with pytest.raises(SystemExit, match="another model"):
        check_cache_model(tmp_path / "fold", {"recon": "a", "seg": "c"})
