"""The model bundle: bit-exact round trip, refusal of tampered or unknown bundles, components."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from AnomalySegLib.bundle import FORMAT_VERSION, ModelBundle, load_bundle, save_bundle
from AnomalySegLib.diffusion.reconstruction import Reconstructor, build_network, load_reconstructor
from AnomalySegLib.diffusion.spec import ReconSpec
from AnomalySegLib.errors import ModelBundleError, OutputExistsError
from AnomalySegLib.training.config import load_config


@pytest.fixture(scope="module")
def spec() -> ReconSpec:
    return ReconSpec.from_dict(load_config("recon_tiny")["model"])


@pytest.fixture()
def bundle(spec: ReconSpec) -> ModelBundle:
    torch.manual_seed(0)
    network = build_network(spec)
    with torch.no_grad():  # an untrained U-Net outputs exactly 0: give every weight a value
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    result = ModelBundle(
        description={
            "noise_levels": [250, 500, 750],
            "preprocessing": {"grid": [96, 96, 50], "spacing_mm": 2.0},
            "metrics": {"l1": 0.125},
            "provenance": {"stage1": {"steps": 3}},
        }
    )
    result.add_component("recon", spec.to_dict(), network.state_dict())
    return result


def _slices() -> torch.Tensor:
    return torch.rand((3, 1, 96, 96), generator=torch.Generator().manual_seed(1))


def test_round_trip_is_bit_exact(bundle: ModelBundle, tmp_path: Path) -> None:
    folder = save_bundle(bundle, tmp_path / "model")
    loaded = load_bundle(folder)
    assert loaded.path == folder
    assert loaded.description == bundle.description
    original, restored = bundle.component("recon"), loaded.component("recon")
    assert restored.architecture == original.architecture
    assert restored.state_dict.keys() == original.state_dict.keys()
    for key, tensor in original.state_dict.items():
        assert restored.state_dict[key].dtype == tensor.dtype
        assert torch.equal(restored.state_dict[key], tensor), key
    # the loaded model reconstructs exactly as the one that was saved
    reference = Reconstructor(ReconSpec.from_dict(original.architecture),
                              build_network(ReconSpec.from_dict(original.architecture), original.state_dict), "cpu",
                              precision="fp32")
    expected = reference.reconstruct(_slices(), generator=torch.Generator().manual_seed(5)).mean
    actual = load_reconstructor(loaded, "cpu", precision="fp32").reconstruct(
        _slices(), generator=torch.Generator().manual_seed(5)
    ).mean
    assert torch.equal(actual, expected)
    assert float(expected.std()) > 0.01  # a real, non-constant reconstruction


def test_model_json_describes_components_and_checksums(bundle: ModelBundle, tmp_path: Path) -> None:
    folder = save_bundle(bundle, tmp_path / "model")
    description = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert description["format"] == "anomalyseg-model-bundle"
    assert description["format_version"] == FORMAT_VERSION
    entry = description["components"]["recon"]
    assert entry["weights"] == "recon.safetensors" and len(entry["sha256"]) == 64
    assert entry["storage_dtype"] == "float32"
    assert description["noise_levels"] == [250, 500, 750]
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "recon.safetensors"]
    assert not list(tmp_path.glob(".model.*")), "no temporary folder may be left behind"


def test_tampered_weight_file_is_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    folder = save_bundle(bundle, tmp_path / "model")
    weights = folder / "recon.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelBundleError, match="checksum mismatch") as caught:
        load_bundle(folder)
    assert str(weights) in str(caught.value)


def test_unknown_format_version_is_refused_clearly(bundle: ModelBundle, tmp_path: Path) -> None:
    folder = save_bundle(bundle, tmp_path / "model")
    description = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    description["format_version"] = 99
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(ModelBundleError, match="format version 99.*update AnomalySeg"):
        load_bundle(folder)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda folder: (folder / "model.json").unlink(), "model.json: missing"),
        (lambda folder: (folder / "model.json").write_text("{not json"), "not valid JSON"),
        (lambda folder: (folder / "recon.safetensors").unlink(), "recon.safetensors: missing"),
        (lambda folder: (folder / "model.json").write_text('{"format": "other"}'), "not an AnomalySeg model"),
    ],
)
def test_damaged_bundles_are_refused_naming_the_file(bundle, tmp_path: Path, damage, message) -> None:
    folder = save_bundle(bundle, tmp_path / "model")
    damage(folder)
    with pytest.raises(ModelBundleError, match=message):
        load_bundle(folder)


def test_weight_file_outside_the_bundle_is_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    folder = save_bundle(bundle, tmp_path / "model")
    description = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    description["components"]["recon"]["weights"] = "../elsewhere.safetensors"
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(ModelBundleError, match="plain .safetensors file name"):
        load_bundle(folder)


def test_existing_bundle_is_kept_unless_overwrite(bundle: ModelBundle, tmp_path: Path) -> None:
    folder = save_bundle(bundle, tmp_path / "model")
    with pytest.raises(OutputExistsError):
        save_bundle(bundle, folder)
    bundle.description["metrics"] = {"l1": 0.1}
    save_bundle(bundle, folder, overwrite=True)
    assert load_bundle(folder).description["metrics"] == {"l1": 0.1}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_resaving_keeps_files_the_bundle_does_not_own_and_drops_stale_weights(bundle: ModelBundle,
                                                                            tmp_path: Path) -> None:
    folder = save_bundle(bundle, tmp_path / "model")
    (folder / "MODEL_CARD.md").write_text("# written by hand\n", encoding="utf-8")
    (folder / "old.safetensors").write_bytes(b"weights of a component the new bundle does not have")
    save_bundle(bundle, folder, overwrite=True)
    assert (folder / "MODEL_CARD.md").read_text(encoding="utf-8") == "# written by hand\n"
    assert not (folder / "old.safetensors").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "model.json", "recon.safetensors"]


def test_saved_bundle_has_ordinary_permissions(bundle: ModelBundle, tmp_path: Path) -> None:
    """Staged in a private mkdtemp folder, the bundle still ends up with the umask's permissions."""
    umask = os.umask(0)
    os.umask(umask)
    folder = save_bundle(bundle, tmp_path / "model")
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in folder.iterdir())


def test_fingerprint_follows_the_weights_not_the_folder(bundle: ModelBundle, tmp_path: Path) -> None:
    first = load_bundle(save_bundle(bundle, tmp_path / "a"))
    second = load_bundle(save_bundle(bundle, tmp_path / "b"))
    assert first.fingerprint() == second.fingerprint() is not None
    assert ModelBundle().fingerprint() is None
    bundle.components["recon"].state_dict[next(iter(bundle.components["recon"].state_dict))].add_(1.0)
    assert load_bundle(save_bundle(bundle, tmp_path / "c")).fingerprint() != first.fingerprint()


def test_half_precision_storage(bundle: ModelBundle, spec: ReconSpec, tmp_path: Path) -> None:
    full = save_bundle(bundle, tmp_path / "fp32")
    half = save_bundle(bundle, tmp_path / "fp16", storage_dtype=torch.float16)
    size = lambda folder: (folder / "recon.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    loaded = load_bundle(half)
    assert json.loads((half / "model.json").read_text(encoding="utf-8"))["components"]["recon"]["storage_dtype"] == "float16"
    reconstructor = load_reconstructor(loaded, "cpu", precision="fp32")  # fp16 weights load into fp32
    for key, tensor in bundle.component("recon").state_dict.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(loaded.component("recon").state_dict[key].float(), tensor, atol=1e-3, rtol=1e-3)
    assert next(reconstructor.network.parameters()).dtype == torch.float32


def test_stage_two_extends_a_stage_one_bundle(bundle: ModelBundle, tmp_path: Path) -> None:
    stage1 = load_bundle(save_bundle(bundle, tmp_path / "stage1"))
    stage2 = stage1.derive()
    stage2.add_component("seg", {"channels": [4, 8]}, {"conv.weight": torch.ones(8, 4, 3, 3)})
    stage2.description["scoring"] = {"beta": 0.5, "threshold": 0.42}
    with pytest.raises(ValueError, match="has a component 'recon' already"):
        stage2.add_component("recon", {}, {})
    loaded = load_bundle(save_bundle(stage2, tmp_path / "stage2"))
    assert sorted(loaded.components) == ["recon", "seg"]
    assert loaded.component("recon").sha256 == stage1.component("recon").sha256
    assert loaded.description["scoring"] == {"beta": 0.5, "threshold": 0.42}
    assert "scoring" not in stage1.description
    with pytest.raises(ModelBundleError, match="has no 'other' component"):
        loaded.component("other")


def test_reserved_and_invalid_names_are_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="alphanumeric"):
        bundle.add_component("../x", {}, {})
    bundle.description["format_version"] = 2
    with pytest.raises(ValueError, match="reserved"):
        save_bundle(bundle, tmp_path / "model")


def test_architecture_that_does_not_fit_the_weights_is_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    folder = save_bundle(bundle, tmp_path / "model")
    description = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    description["components"]["recon"]["architecture"]["denoiser"]["unet"]["channels"] = [32, 64, 64]
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(ModelBundleError, match="weights do not fit"):
        load_reconstructor(load_bundle(folder), "cpu")
