"""scripts/train_default_model.py: how the variant bank's sources are split by subject, and which earlier
models it may fine-tune from (a model that saw a held-out subject would make the held-out numbers a lie)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from AnomalySegLib.augmentation.variant_bank import SOURCES
from AnomalySegLib.bundle import ModelBundle

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_default_model.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_split_trains_on_every_other_source(recipe):
    training, calibration, test = recipe.split_sources(list(recipe.CALIBRATION_SOURCES), list(recipe.TEST_SOURCES))
    assert set(training) | set(calibration) | set(test) == set(SOURCES)
    assert not set(training) & (set(calibration) | set(test)) and not set(calibration) & set(test)
    assert not set(SOURCES) & set(recipe.NEVER_TRAIN_ON)  # the tumour cases are never a bank source


def test_a_leave_one_source_out_fold_and_bad_splits(recipe):
    training, _, test = recipe.split_sources(["itk_kmeans_t1"], ["mrhead"])
    assert "mrhead" not in training and test == ("mrhead",) and "someones_anatomy" in training
    with pytest.raises(SystemExit, match="both calibrate and test"):
        recipe.split_sources(["mrhead"], ["mrhead", "colin27_t1"])
    with pytest.raises(SystemExit, match="no bank source is left"):
        recipe.split_sources(list(SOURCES)[:1], list(SOURCES)[1:])


def test_fine_tuning_only_from_a_model_that_never_saw_the_held_out_subjects(recipe):
    def model(**recipe_record) -> ModelBundle:
        return ModelBundle(description={"provenance": {"default_model": recipe_record}}, path=Path("earlier"))

    earlier = model(training_volumes=["icbm2009c_t1", "colin27_t1", "mrhead"])  # the first default model's record
    recipe.check_never_saw_held_out(earlier, ("itk_kmeans_t1", "someones_anatomy"))
    with pytest.raises(SystemExit, match="trained on mrhead"):
        recipe.check_never_saw_held_out(earlier, ("itk_kmeans_t1", "mrhead"))
    with pytest.raises(SystemExit, match="trained on mrbraintumor1"):
        recipe.check_never_saw_held_out(model(training_sources=["mrbraintumor1"]), ("itk_kmeans_t1",))
    with pytest.raises(SystemExit, match="records no training sources"):
        recipe.check_never_saw_held_out(model(), ("itk_kmeans_t1",))


def test_benchmarks_read_the_held_out_subjects_from_the_bundle():
    """scripts/calibrate_default_model.py's split: from the recipe's record (the bundled model), or, for a bundle
    made before the recipe recorded it (the previous default model), from its operating point's record."""
    from AnomalySegLib.bundle import load_bundle
    from AnomalySegLib.pipeline import default_model_path

    spec = importlib.util.spec_from_file_location("calibrate_default_model", SCRIPT.parent / "calibrate_default_model.py")
    calibration_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibration_script)
    bundled = load_bundle(default_model_path())
    recipe = bundled.description["provenance"]["default_model"]
    assert calibration_script.default_model_split(bundled) == (recipe["calibration_sources"], recipe["test_sources"])

    previous = ModelBundle(description={
        "provenance": {"default_model": {"training_volumes": ["mrhead", "colin27_t1"]}},
        "scoring": {"calibration": {"operating_point": {
            "healthy_cases": ["heldout_itk_kmeans_t1", "heldout_someones_anatomy"],
            "untouched_healthy_scans": ["robex_atlas_t1"]}}}})
    assert calibration_script.default_model_split(previous) == (["itk_kmeans_t1", "someones_anatomy"],
                                                                ["robex_atlas_t1"])

    recorded = ModelBundle(description={"provenance": {"default_model": {
        "training_sources": ["mrhead"], "calibration_sources": ["itk_kmeans_t1"], "test_sources": ["someones_anatomy"]}}})
    assert calibration_script.default_model_split(recorded) == (["itk_kmeans_t1"], ["someones_anatomy"])
    leaked = ModelBundle(description={"provenance": {"default_model": {
        "training_sources": ["itk_kmeans_t1"], "calibration_sources": ["itk_kmeans_t1"], "test_sources": []}}})
    with pytest.raises(SystemExit, match="used for training"):
        calibration_script.default_model_split(leaked)


def test_an_operating_point_pooled_over_several_subjects_takes_them_out_of_the_test_sources(tmp_path, tiny_bundle):
    """``--calibration-sources``: chosen on the given untrained subjects; a test source used for the choice is no
    longer reported as untouched, and the record in model.json says so after the write (weights untouched)."""
    import json
    import shutil

    from AnomalySegLib.bundle import load_bundle
    from AnomalySegLib.calibration import write_scoring_section

    spec = importlib.util.spec_from_file_location("calibrate_default_model", SCRIPT.parent / "calibrate_default_model.py")
    calibration_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibration_script)
    record = {"training_sources": ["mrhead", "colin27_t1"], "calibration_sources": ["itk_kmeans_t1"],
              "test_sources": ["someones_anatomy", "papaya_sample_t1"]}
    bundle = ModelBundle(description={"provenance": {"default_model": record}})
    assert calibration_script.pooled_split(bundle, ["itk_kmeans_t1", "papaya_sample_t1"]) == (
        ["itk_kmeans_t1", "papaya_sample_t1"], ["someones_anatomy"])
    with pytest.raises(SystemExit, match="mrhead was used for training"):
        calibration_script.pooled_split(bundle, ["itk_kmeans_t1", "mrhead"])

    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, folder)
    weights = {p.name: p.read_bytes() for p in folder.glob("*.safetensors")}
    section = {**load_bundle(folder).description["scoring"], "threshold_note": "pooled"}
    write_scoring_section(folder, section, {"default_model": {**record, "test_sources": ["someones_anatomy"]}})
    written = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert written["scoring"]["threshold_note"] == "pooled"
    assert written["provenance"]["default_model"]["test_sources"] == ["someones_anatomy"]
    assert {p.name: p.read_bytes() for p in folder.glob("*.safetensors")} == weights
    assert load_bundle(folder).description["provenance"]["default_model"]["training_sources"] == ["mrhead", "colin27_t1"]


def test_the_bank_is_built_with_the_spec_the_recipe_trains_and_records():
    """build_variant_bank.py (without --model) and train_default_model.py look for the same bank folder, and
    the recorded preprocessing is today's spec on the chosen grid (training and inference preprocess alike)."""
    import dataclasses

    from AnomalySegLib.augmentation.variant_bank import SIMULATION_VERSION, bank_root, recipe_spec
    from AnomalySegLib.preprocessing.spec import MODEL_GRIDS, WHOLE_BRAIN_GRID, PreprocessingSpec

    spec = importlib.util.spec_from_file_location("build_variant_bank", SCRIPT.parent / "build_variant_bank.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert builder.parse_args([]).model is None  # the default bank is the recipe's, not the bundled model's
    assert recipe_spec("whole_brain") == dataclasses.replace(PreprocessingSpec(), grid=WHOLE_BRAIN_GRID)
    roots = {bank_root("bank", recipe_spec(name)) for name in MODEL_GRIDS}
    assert len(roots) == len(MODEL_GRIDS)  # one bank per grid, never mixed
    # nor with a bank of another simulation: the version is in the folder name
    assert all(root.name.endswith(f"-a{SIMULATION_VERSION}") for root in roots)


def test_the_domain_reference_of_a_recipe_model_is_every_variant_it_trained_and_calibrated_on():
    spec = importlib.util.spec_from_file_location("domain_reference", SCRIPT.parent / "domain_reference.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from AnomalySegLib.augmentation.variant_bank import SIMULATION_VERSION

    recipe = {"training_sources": ["mrhead", "icbm2009c_t1"], "calibration_sources": ["itk_kmeans_t1"],
              "variant_bank": {"spec_key": f"0123abcd-a{SIMULATION_VERSION}"}}
    training, validation = script.reference_scans({"provenance": {"default_model": recipe}})
    assert training[:2] == ["mrhead_v000", "mrhead_v001"] and len(training) == 9 + 3  # templates: a third
    assert validation == [f"itk_kmeans_t1_v{i:03d}" for i in range(9)]
    # a model of an older simulation (a bank folder without the version suffix): its variants cannot be re-made
    recipe["variant_bank"] = {"spec_key": "0123abcd"}
    with pytest.raises(SystemExit, match="simulation version 1"):
        script.reference_scans({"provenance": {"default_model": recipe}})
    older = {"provenance": {"stage1": {"training_cases": ["train_mrhead"], "validation_cases": ["val_itk_kmeans_t1"]}}}
    assert script.reference_scans(older) == (["mrhead"], ["itk_kmeans_t1"])


@pytest.mark.slow
def test_a_variant_is_re_simulated_bit_for_bit(real_data):
    """The bank stores only the preprocessed variant; the domain reference re-simulates the native one."""
    import numpy as np
    import SimpleITK as sitk

    from AnomalySegLib.augmentation.variant_bank import simulated_variant

    first, record = simulated_variant("itk_kmeans_t1", 1)  # contrast-enhanced: the dural map is registered too
    again, _ = simulated_variant("itk_kmeans_t1", 1)
    other, _ = simulated_variant("itk_kmeans_t1", 3)
    assert not record["identity"] and record["params"]["enhancement"] > 0
    assert np.array_equal(sitk.GetArrayViewFromImage(first), sitk.GetArrayViewFromImage(again))
    assert first.GetSpacing() != other.GetSpacing() or not np.array_equal(
        sitk.GetArrayViewFromImage(first), sitk.GetArrayViewFromImage(other))
    scan, as_is = simulated_variant("itk_kmeans_t1", 0)
    original = sitk.ReadImage(str(real_data("itk_kmeans_t1")), sitk.sitkFloat32)
    assert as_is == {"identity": True}
    assert np.array_equal(sitk.GetArrayViewFromImage(scan), sitk.GetArrayViewFromImage(original))


def test_variant_ids_round_trip_and_other_names_are_not_variants():
    from AnomalySegLib.augmentation.variant_bank import parse_variant_id, variant_id

    assert parse_variant_id(variant_id("robex_atlas_t1", 7)) == ("robex_atlas_t1", 7)
    assert parse_variant_id("mrhead") is None  # a fetch-data name
    assert parse_variant_id("mrbraintumor1_v001") is None  # not a bank source
