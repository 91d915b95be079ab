"""Scoring functions against reference implementations and hand-checked arrays."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

from AnomalySegLib.scoring import (
    ScoringSpec,
    combined_score,
    median_filter_3d,
    reconstruction_score,
    scoring_mask,
    ssim_map_3d,
)
from AnomalySegLib.scoring._padding import symmetric_pad
from AnomalySegLib.scoring.postprocess import erode_mask
from AnomalySegLib.scoring.ssim import gaussian_kernel_1d


def _skimage_ssim_map(x: np.ndarray, y: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    _, full = structural_similarity(
        x, y, gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=1.0, full=True
    )
    return full


@pytest.fixture(scope="module")
def real_pair(real_data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real T1 brain (ICBM 2009c at 2 mm, 50 slices) in [0, 1], a smoothed copy with a bright blob, the mask."""
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(real_data("icbm2009c_t1_brain"))))[40:140:2, 10:202:2, 0:192:2]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(real_data("icbm2009c_mask"))))[40:140:2, 10:202:2, 0:192:2] > 0.5
    image = np.clip(image / np.percentile(image[mask], 99), 0, 1).astype(np.float64)
    other = ndimage.gaussian_filter(image, 0.7)
    other[20:26, 40:50, 40:50] = 0.95
    return image, other, mask


def test_gaussian_window_is_nine_voxels_for_sigma_one():
    kernel = gaussian_kernel_1d(1.0)
    assert kernel.numel() == 9
    assert kernel.sum().item() == pytest.approx(1.0)
    assert kernel[4] == kernel.max() and torch.allclose(kernel, kernel.flip(0))


@pytest.mark.parametrize("shape", [(9, 10, 11), (9, 20, 12), (12, 12, 12)])
def test_ssim_map_matches_skimage_on_random_volumes(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.random(shape)
    y = np.clip(x + 0.2 * rng.standard_normal(shape), 0, 1)
    expected = _skimage_ssim_map(x, y)
    result = ssim_map_3d(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(result, expected, atol=1e-10)  # float64 in, float64 out: same maths
    result32 = ssim_map_3d(torch.from_numpy(x).float(), torch.from_numpy(y).float()).numpy()
    np.testing.assert_allclose(result32, expected, atol=1e-6)


def test_symmetric_padding_matches_numpy_even_beyond_the_axis_length():
    values = torch.arange(3.0)
    for pad in (1, 2, 3, 5, 8):
        expected = np.pad(values.numpy(), pad, mode="symmetric")
        np.testing.assert_array_equal(symmetric_pad(values, 0, pad).numpy(), expected)


def test_ssim_map_matches_skimage_on_a_real_volume(real_pair):
    image, other, _ = real_pair
    expected = _skimage_ssim_map(image, other)
    result = ssim_map_3d(torch.from_numpy(image).float(), torch.from_numpy(other).float()).numpy()
    np.testing.assert_allclose(result, expected, atol=1e-6)
    # The inserted blob is where the two differ most.
    assert result[20:26, 40:50, 40:50].mean() < result.mean() - 0.2
    batched = ssim_map_3d(torch.stack([torch.from_numpy(image)] * 2), torch.stack([torch.from_numpy(other)] * 2))
    np.testing.assert_allclose(batched[1].numpy(), expected, atol=1e-10)
    identical = ssim_map_3d(torch.from_numpy(image), torch.from_numpy(image))
    torch.testing.assert_close(identical, torch.ones_like(identical))


@pytest.mark.parametrize("kernel", [3, 5])
def test_median_filter_matches_scipy(kernel):
    rng = np.random.default_rng(kernel)
    volume = rng.integers(0, 6, size=(7, 11, 13)).astype(np.float32)  # many ties
    expected = ndimage.median_filter(volume, size=kernel)
    result = median_filter_3d(torch.from_numpy(volume), kernel).numpy()
    np.testing.assert_array_equal(result, expected)


def test_median_filter_hand_checked():
    volume = torch.zeros(5, 5, 5)
    volume[2, 2, 2] = 10.0  # an isolated spike disappears
    assert median_filter_3d(volume, 5).abs().max() == 0
    block = torch.zeros(9, 9, 9)
    block[:, :, 5:] = 1.0  # a half-space edge stays where it is
    torch.testing.assert_close(median_filter_3d(block, 5), block)
    with pytest.raises(ValueError, match="odd"):
        median_filter_3d(volume, 4)


def test_reconstruction_score_composes_ssim_mask_and_median(real_pair):
    image, other, mask = real_pair
    result = reconstruction_score(torch.from_numpy(image), torch.from_numpy(other), torch.from_numpy(mask))
    expected = ndimage.median_filter((1 - _skimage_ssim_map(image, other)) * mask, size=5)
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-6)
    assert result.dtype == torch.float32
    same = reconstruction_score(torch.from_numpy(image), torch.from_numpy(image), torch.from_numpy(mask))
    assert same.abs().max() < 1e-5


def test_combined_score_hand_checked():
    term = torch.tensor([[[0.2, 0.4, 0.6]]])
    probability = torch.tensor([[[1.0, 0.0, 0.5]]])
    mask = torch.tensor([[[True, True, False]]])
    half = combined_score(term, probability, mask, ScoringSpec(beta=0.5))
    torch.testing.assert_close(half, torch.tensor([[[0.6, 0.2, 0.0]]]))
    quarter = combined_score(term, probability, mask, ScoringSpec(beta=0.25))
    torch.testing.assert_close(quarter, torch.tensor([[[0.8, 0.1, 0.0]]]))
    stage_one = combined_score(term, None, mask)
    torch.testing.assert_close(stage_one, torch.tensor([[[0.2, 0.4, 0.0]]]))
    with pytest.raises(ValueError, match="beta"):
        ScoringSpec(beta=1.5)
    assert ScoringSpec.from_dict({"beta": 0.3, "threshold": 0.7}).beta == 0.3


def test_mask_erosion_hand_checked():
    mask = np.zeros((2, 7, 7), dtype=bool)
    mask[:, 1:6, 1:6] = True
    eroded = erode_mask(mask, 1)
    assert eroded.sum() == 2 * 9 and eroded[:, 2:5, 2:5].all()  # in-plane only: both slices keep a 3×3 core
    assert erode_mask(mask, 0).sum() == mask.sum()
    assert scoring_mask(mask, ScoringSpec(mask_erosion=1)).sum() == 18
