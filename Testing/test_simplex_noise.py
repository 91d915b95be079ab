"""Simplex noise (AnoDDPM-style octaves) and Gaussian noise for the forward diffusion process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from AnomalySegLib.diffusion.noise import NoiseSpec, sample_noise, simplex3

PAPER = NoiseSpec()  # simplex, octaves 6, persistence 0.8, frequency 64


def _neighbour_correlation(noise: torch.Tensor) -> float:
    """Correlation between horizontally adjacent pixels, pooled over a [B, 1, H, W] batch."""
    left, right = noise[..., :-1].flatten().numpy(), noise[..., 1:].flatten().numpy()
    return float(np.corrcoef(left, right)[0, 1])


def test_paper_defaults() -> None:
    assert (PAPER.kind, PAPER.octaves, PAPER.persistence, PAPER.frequency) == ("simplex", 6, 0.8, 64.0)
    assert NoiseSpec.from_dict(PAPER.to_dict()) == PAPER


def test_same_seed_same_noise_other_seed_other_noise() -> None:
    first = sample_noise(PAPER, (3, 1, 40, 56), torch.Generator().manual_seed(7))
    again = sample_noise(PAPER, (3, 1, 40, 56), torch.Generator().manual_seed(7))
    other = sample_noise(PAPER, (3, 1, 40, 56), torch.Generator().manual_seed(8))
    assert first.shape == (3, 1, 40, 56) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 0.1


def test_simplex_is_zero_on_lattice_vertices_and_bounded() -> None:
    # Every simplex corner's contribution vanishes at its own vertex, and the other corners are
    # farther than the kernel radius, so the noise is exactly 0 on the (skewed) integer lattice.
    ijk = torch.randint(-40, 40, (3, 500), generator=torch.Generator().manual_seed(0)).float()
    unskew = ijk.sum(0) / 6.0
    on_lattice = simplex3(*(ijk - unskew))
    assert on_lattice.abs().max() < 1e-4  # float32 rounding of the unskewed coordinates
    points = torch.rand((3, 20000), generator=torch.Generator().manual_seed(1)) * 30
    values = simplex3(*points)
    assert values.abs().max() <= 1.0
    assert 0.25 < values.std() < 0.6  # a smooth field, not a constant


def test_simplex_is_continuous() -> None:
    points = torch.rand((3, 5000), generator=torch.Generator().manual_seed(2)) * 20
    step = simplex3(*(points + 1e-3)) - simplex3(*points)
    assert step.abs().max() < 0.05


def test_simplex_octaves_are_smooth_zero_mean_and_independent_per_sample() -> None:
    noise = sample_noise(PAPER, (16, 1, 96, 96), torch.Generator().manual_seed(0))
    assert abs(float(noise.mean())) < 0.1
    assert 0.4 < float(noise.std()) < 1.2  # octave sum, not rescaled (as the authors' code)
    assert _neighbour_correlation(noise) > 0.9  # low frequencies dominate
    flat = noise.flatten(1).numpy()
    between_samples = np.corrcoef(flat)[np.triu_indices(16, 1)]
    assert np.abs(between_samples).mean() < 0.25


def test_gaussian_option_is_white_unit_variance() -> None:
    noise = sample_noise(NoiseSpec(kind="gaussian"), (8, 1, 64, 64), torch.Generator().manual_seed(0))
    assert abs(float(noise.std()) - 1.0) < 0.02
    assert abs(_neighbour_correlation(noise)) < 0.05


def test_invalid_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="noise kind"):
        NoiseSpec(kind="perlin")
    with pytest.raises(ValueError):
        NoiseSpec(octaves=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_noise_on_gpu_matches_cpu() -> None:
    cpu = sample_noise(PAPER, (4, 1, 96, 96), torch.Generator().manual_seed(3), "cpu")
    gpu = sample_noise(PAPER, (4, 1, 96, 96), torch.Generator().manual_seed(3), "cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
