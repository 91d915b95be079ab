"""Schedule, conditioned denoiser and one-pass reconstruction (cDDPM, DDPM, pDDPM)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from AnomalySegLib import device as device_module
from AnomalySegLib.device import DeviceUnavailableError, autocast_dtype, choose_device, cpu_has_native_bf16
from AnomalySegLib.diffusion.reconstruction import (
    Reconstructor,
    build_network,
    default_chunk_size,
    patch_origins,
    reconstruct_volume,
)
from AnomalySegLib.diffusion.schedule import NoiseSchedule, ScheduleSpec
from AnomalySegLib.diffusion.spec import PatchSpec, ReconSpec
from AnomalySegLib.networks.denoiser import Denoiser, DenoiserSpec
from AnomalySegLib.training.config import load_config

TINY = ReconSpec.from_dict(load_config("recon_tiny")["model"])


def _spec(kind: str) -> ReconSpec:
    denoiser = dataclasses.replace(TINY.denoiser, kind=kind)
    patch = PatchSpec(size=24, stride=24) if kind == "pddpm" else None
    return dataclasses.replace(TINY, denoiser=denoiser, patch=patch)


def _perturbed_network(spec: ReconSpec) -> Denoiser:
    """A denoiser whose every weight is non-zero (MONAI zero-initialises the output convolution)."""
    torch.manual_seed(0)
    network = build_network(spec)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return network


def _volume(slices: int = 4) -> np.ndarray:
    return torch.rand((slices, 96, 96), generator=torch.Generator().manual_seed(4)).numpy()


def test_cosine_schedule_is_nichol_dhariwal() -> None:
    schedule = NoiseSchedule(ScheduleSpec("cosine", 1000))
    alpha_bar = schedule.alphas_cumprod(torch.device("cpu"))
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 750, 990):
        assert alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-4, abs=1e-6)
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])


def test_linear_schedule_and_add_noise() -> None:
    schedule = NoiseSchedule(ScheduleSpec("linear", 1000))
    alpha_bar = schedule.alphas_cumprod(torch.device("cpu"))
    expected = torch.cumprod(1 - torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64), 0)
    torch.testing.assert_close(alpha_bar.double(), expected, rtol=1e-5, atol=1e-7)
    x0, noise = torch.full((2, 1, 4, 4), 0.5), torch.ones((2, 1, 4, 4))
    x_t = schedule.add_noise(x0, noise, torch.tensor([0, 999]))
    for row, t in enumerate((0, 999)):
        a = alpha_bar[t].item()
        assert x_t[row].flatten()[0].item() == pytest.approx(math.sqrt(a) * 0.5 + math.sqrt(1 - a), rel=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        schedule.add_noise(x0, noise, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="schedule must be"):
        ScheduleSpec("sigmoid")


def test_encoder_features_condition_the_unet() -> None:
    network = _perturbed_network(_spec("cddpm")).eval()
    assert isinstance(network.unet.class_embedding, torch.nn.Linear)
    x_t = torch.randn(2, 1, 48, 48)
    timesteps = torch.tensor([250, 500])
    condition = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        a = network(x_t, timesteps, condition)
        b = network(x_t, timesteps, torch.rand(2, 1, 48, 48))
    assert a.shape == (2, 1, 48, 48)
    assert (a - b).abs().mean() > 1e-4, "the output must depend on the conditioning image"
    network.train()
    network(x_t, timesteps, condition).abs().mean().backward()
    encoder_gradient = sum(p.grad.abs().sum() for p in network.encoder.parameters() if p.grad is not None)
    assert encoder_gradient > 0, "the encoder must be trained through the denoising loss"
    with pytest.raises(ValueError, match="condition_image"):
        network(x_t, timesteps)


def test_plain_ddpm_has_no_encoder() -> None:
    network = build_network(_spec("ddpm"))
    assert network.encoder is None
    assert DenoiserSpec.from_dict(network.spec.to_dict()) == network.spec


def test_spec_round_trip_and_validation() -> None:
    for kind in ("cddpm", "ddpm", "pddpm"):
        spec = _spec(kind)
        assert ReconSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="needs a 'patch'"):
        dataclasses.replace(TINY, denoiser=dataclasses.replace(TINY.denoiser, kind="pddpm"))
    with pytest.raises(ValueError, match="divisible"):
        dataclasses.replace(TINY, image_size=(50, 50))


def test_patch_tiling_covers_the_grid() -> None:
    assert patch_origins((96, 96), PatchSpec(48, 48)) == [(0, 0), (0, 48), (48, 0), (48, 48)]
    origins = patch_origins((96, 80), PatchSpec(48, 32))
    covered = np.zeros((96, 80), bool)
    for row, col in origins:
        covered[row : row + 48, col : col + 48] = True
    assert covered.all() and all(row + 48 <= 96 and col + 48 <= 80 for row, col in origins)


@pytest.mark.parametrize("kind", ["cddpm", "ddpm", "pddpm"])
def test_reconstruction_is_deterministic_and_independent_of_chunking(kind: str) -> None:
    reconstructor = Reconstructor(_spec(kind), _perturbed_network(_spec(kind)), "cpu", precision="fp32")
    volume = _volume()
    whole = reconstruct_volume(reconstructor, volume, seed=3, chunk_size=4)
    chunked = reconstruct_volume(reconstructor, volume, seed=3, chunk_size=3)
    other_seed = reconstruct_volume(reconstructor, volume, seed=4, chunk_size=4)
    assert whole.mean.shape == (4, 96, 96) and whole.per_level.shape == (3, 4, 96, 96)
    assert whole.noise_levels == (250, 500, 750)
    np.testing.assert_allclose(chunked.mean, whole.mean, atol=1e-5)
    np.testing.assert_allclose(whole.mean, whole.per_level.mean(0), atol=1e-6)
    assert np.abs(other_seed.mean - whole.mean).mean() > 1e-4
    assert whole.mean.min() >= 0 and whole.mean.max() <= 1


def test_predict_x0_noises_each_sample_at_its_own_level() -> None:
    spec = _spec("cddpm")
    reconstructor = Reconstructor(spec, _perturbed_network(spec), "cpu", precision="fp32")
    images = torch.from_numpy(_volume(2)).unsqueeze(1)
    noise = reconstructor.sample_noise(2, torch.Generator().manual_seed(0))
    together = reconstructor.predict_x0(images, torch.tensor([100, 900]), noise=noise)
    reconstructor.network.encoder.eval()
    for row, level in enumerate((100, 900)):
        alone = reconstructor.predict_x0(images[row : row + 1], torch.tensor([level]), noise=noise[row : row + 1])
        torch.testing.assert_close(together[row : row + 1], alone, atol=1e-5, rtol=0)
    result = reconstructor.reconstruct(images, noise_levels=(300, 600), generator=torch.Generator().manual_seed(1))
    assert result.per_level.shape == (2, 2, 1, 96, 96) and result.noise_levels == (300, 600)


def test_chunk_size_follows_available_memory() -> None:
    reconstructor = Reconstructor(TINY, build_network(TINY), "cpu", precision="fp32")
    small = default_chunk_size(reconstructor, memory_bytes=64 << 20)
    large = default_chunk_size(reconstructor, memory_bytes=8 << 30)
    assert 1 <= small < large <= 256


def test_device_choice_and_precision() -> None:
    assert choose_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert choose_device("auto").type == expected
    with pytest.raises(DeviceUnavailableError, match="not a device name"):
        choose_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="no CUDA GPU"):
            choose_device("cuda")
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(cpu, "int8")
    bf16 = Reconstructor(TINY, build_network(TINY), "cpu", precision="bf16")
    assert bf16.autocast_dtype == torch.bfloat16


def test_auto_precision_on_the_cpu_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    cpu = torch.device("cpu")
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    native = any(f" {flag}" in cpuinfo for flag in ("avx512_bf16", "amx_bf16"))
    assert cpu_has_native_bf16() == native
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if native else None)
    # The other kind of CPU cannot exist on one machine: its /proc/cpuinfo flags are substituted.
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: frozenset({"avx512f", "avx512bw", "avx512vl"}))
    assert autocast_dtype(cpu, "auto") is None  # AVX-512 alone emulates bf16: fp32
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "amx_tile"}))
    assert autocast_dtype(cpu, "auto") == torch.bfloat16
