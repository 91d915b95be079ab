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


AUTHORS = NoiseSpec(kind="simplex2d_shared")  # the paper's code: 2D OpenSimplex, one field per call


def _field_std(spec: NoiseSpec, draws: int = 100) -> float:
    """Median standard deviation of single 96 x 96 fields over ``draws`` seeds."""
    stds = [float(sample_noise(spec, (1, 1, 96, 96), torch.Generator().manual_seed(seed)).std())
            for seed in range(draws)]
    return float(np.median(stds))


def test_field_std_of_ours_and_of_the_authors_noise() -> None:
    # Measured: ours about 0.67, the authors' 2D OpenSimplex about 0.54 per 96 x 96 field (issue #16
    # quotes 0.67 vs 0.53); the two kinds are not the same distribution.
    ours, authors = _field_std(PAPER), _field_std(AUTHORS)
    assert 0.62 < ours < 0.72
    assert 0.49 < authors < 0.58
    assert ours / authors > 1.15


def test_authors_noise_is_one_field_shared_over_the_batch() -> None:
    noise = sample_noise(AUTHORS, (5, 1, 96, 96), torch.Generator().manual_seed(0))
    assert noise.shape == (5, 1, 96, 96) and noise.dtype == torch.float32
    assert all(torch.equal(noise[0], noise[index]) for index in range(1, 5))
    other = sample_noise(AUTHORS, (5, 1, 96, 96), torch.Generator().manual_seed(1))
    assert (noise - other).abs().mean() > 0.1  # a new lattice per call
    again = sample_noise(AUTHORS, (5, 1, 96, 96), torch.Generator().manual_seed(0))
    assert torch.equal(noise, again)
    assert _neighbour_correlation(noise) > 0.9
    assert noise.abs().max() < 2.5


def test_opensimplex_is_continuous_and_bounded() -> None:
    from AnomalySegLib.diffusion.noise import opensimplex2

    permutation = torch.randperm(256, generator=torch.Generator().manual_seed(4))
    points = torch.rand((2, 5000), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 20
    values = opensimplex2(points[0], points[1], permutation)
    assert values.abs().max() <= 1.0
    assert 0.15 < float(values.std()) < 0.6
    step = opensimplex2(points[0] + 1e-4, points[1] + 1e-4, permutation) - values
    assert step.abs().max() < 0.01


def test_a_volume_shares_one_authors_field_per_noise_level() -> None:
    # reconstruct_volume draws one call per noise level for all slices: with the authors' noise every
    # slice of a test volume gets the same field at a given level (as in their test_step), and the
    # levels get different fields. A real tiny network runs; we only record the noise it receives.
    import dataclasses

    from AnomalySegLib.diffusion.reconstruction import Reconstructor, build_network, reconstruct_volume
    from AnomalySegLib.training.config import load_config
    from AnomalySegLib.training.recon_training import parse_config

    spec, _, levels = parse_config(load_config("recon_tiny"))
    spec = dataclasses.replace(spec, noise=AUTHORS)
    torch.manual_seed(0)
    reconstructor = Reconstructor(spec, build_network(spec), "cpu", precision="fp32", noise_levels=levels)
    received = []
    original = reconstructor.predict_x0

    def recording(slices, timesteps, noise):
        received.append((timesteps.clone(), noise.clone()))
        return original(slices, timesteps, noise=noise)

    reconstructor.predict_x0 = recording
    reconstruct_volume(reconstructor, np.random.default_rng(0).random((4, 48, 48), dtype=np.float32),
                       seed=3, chunk_size=5)
    timesteps = torch.cat([t for t, _ in received])
    noise = torch.cat([n for _, n in received])
    fields = {}
    for level in levels:
        rows = noise[timesteps == level]
        assert len(rows) == 4 and all(torch.equal(rows[0], row) for row in rows)
        fields[level] = rows[0]
    assert not torch.equal(fields[levels[0]], fields[levels[1]])
