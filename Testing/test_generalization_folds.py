"""The generalization benchmark says what each held-out scan was to the model, and refuses a fold whose model
trained on a scan the fold holds out (it would measure something easier than unseen data)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from generalization import held_out_roles, training_record, training_words  # noqa: E402

from AnomalySegLib.bundle import load_bundle  # noqa: E402
from AnomalySegLib.pipeline import default_model_path  # noqa: E402


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
