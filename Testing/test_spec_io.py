"""One JSON policy for every spec: defaults for missing keys, unknown keys refused by name, tuples."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.diffusion.spec import ReconSpec
from AnomalySegLib.errors import InputError
from AnomalySegLib.networks.seg_unet import SegUnetSpec
from AnomalySegLib.pipeline import default_model_path
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.scoring.anomaly_score import ScoringSpec
from AnomalySegLib.spec_io import SpecError
from AnomalySegLib.training.config import available_configs, load_config
from AnomalySegLib.training.recon_training import ReconTrainingSpec, parse_config
from AnomalySegLib.training.seg_config import SegTrainingSpec, parse_seg_config


def _through_json(values: dict) -> dict:
    return json.loads(json.dumps(values))


@pytest.mark.parametrize("name", [name for name in available_configs() if name.startswith("recon")])
def test_stage1_configs_round_trip_through_json(name):
    spec, settings, _ = parse_config(load_config(name))
    assert ReconSpec.from_dict(_through_json(spec.to_dict())) == spec
    assert ReconTrainingSpec.from_dict(_through_json(settings.to_dict())) == settings


@pytest.mark.parametrize("name", [name for name in available_configs() if name.startswith("seg")])
def test_stage2_configs_round_trip_through_json(name):
    parsed = parse_seg_config(load_config(name))
    assert SegUnetSpec.from_dict(_through_json(parsed.network.to_dict())) == parsed.network
    assert SegTrainingSpec.from_dict(_through_json(parsed.training.to_dict())) == parsed.training
    assert isinstance(parsed.training.timestep_range, tuple)


def test_the_default_models_specs_are_read_and_written_unchanged():
    bundle = load_bundle(default_model_path())
    for component, spec_class in (("recon", ReconSpec), ("seg", SegUnetSpec)):
        architecture = bundle.components[component].architecture
        assert spec_class.from_dict(architecture).to_dict() == architecture
    preprocessing = bundle.description["preprocessing"]
    assert PreprocessingSpec.from_dict(preprocessing).to_dict() == preprocessing


def test_an_unknown_nested_key_is_refused_with_its_path():
    model = load_config("recon_tiny")["model"]
    model["denoiser"]["unet"]["chanels"] = [8, 16]
    with pytest.raises(SpecError, match=r"unknown Stage I model spec field\(s\): denoiser\.unet\.chanels"):
        ReconSpec.from_dict(model)


def test_missing_keys_take_the_defaults_and_lists_become_tuples():
    settings = SegTrainingSpec.from_dict({"timestep_range": [10, 20],
                                              "augmentation": {"gamma_range": [0.9, 1.1]}})
    assert settings.timestep_range == (10, 20) and settings.batch_size == SegTrainingSpec().batch_size
    assert settings.augmentation.gamma_range == (0.9, 1.1)


@pytest.mark.parametrize("values, message", [
    ({"timestep_range": [10]}, r"timestep_range must have 2 values, not 1"),
    ({"timestep_range": 10}, r"timestep_range must be a list"),
    ({"augmentation": "on"}, r"augmentation must be a JSON object"),
    ({"optimizer": "sgd"}, r"optimizer must be one of"),
])
def test_invalid_values_name_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        SegTrainingSpec.from_dict(values)


def test_the_bundles_scoring_section_is_free_form_but_a_configs_is_not():
    section = {"beta": 0.25, "thresholds": {"val": 0.4}, "calibration": {"seed": 0}}
    assert ScoringSpec.from_dict(section).beta == 0.25
    config = load_config("seg_tiny")
    config["scoring"] = {"betta": 0.25}
    with pytest.raises(InputError, match=r"unknown scoring section field\(s\): betta"):
        parse_seg_config(config)


@pytest.mark.parametrize("name, parse", [("recon_tiny", parse_config), ("seg_tiny", parse_seg_config)])
def test_an_unknown_top_level_config_key_is_refused_naming_the_config(name, parse):
    config = load_config(name)
    config["trainig"] = {"max_steps": 5}
    with pytest.raises(InputError, match=rf"{name}: .*unknown Stage I+ configuration key\(s\): trainig"):
        parse(config)


def test_typed_views_are_called_spec_never_config_or_settings():
    """One word for one idea (docs/design.md, "Specs and their JSON form"): a config is a JSON file, its
    typed view a Spec. A class named ``...Config`` or ``...Settings`` in the engine would bring the drift back."""

    engine = Path(__file__).resolve().parent.parent / "AnomalySegLib"
    offenders = []
    for path in sorted(engine.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Config", "Settings")):
                offenders.append(f"{path.relative_to(engine)}: {node.name}")
    assert not offenders, offenders
