"""Synthetic anomalies: Perlin noise, the texture ops (against PIL), DRAEM, lesion-like blobs, tumour-like
anomalies, mixtures, balls."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image, ImageEnhance, ImageOps

from AnomalySegLib.anomalies import (AnomalyMixture, DraemAnomalyGenerator, LesionAnomalyGenerator,
                                     SphereAnomalyGenerator, TumourAnomalyGenerator, TumourAppearance, paint_tumour)
from AnomalySegLib.anomalies import image_ops
from AnomalySegLib.anomalies.perlin import perlin_noise_2d, random_perlin_noise_2d


@pytest.fixture(scope="module")
def real_slices(real_data) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight axial slices of the ICBM 2009c T1 brain at 2 mm (≈ 96×114), in [0, 1], and their masks."""
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(real_data("icbm2009c_t1_brain"))))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(real_data("icbm2009c_mask")))) > 0.5
    rows = slice(60, 140, 10)
    image = image[rows, ::2, ::2][:, :112, :96]
    mask = mask[rows, ::2, ::2][:, :112, :96]
    image = np.clip(image / np.percentile(image[mask], 99), 0, 1)
    return torch.tensor(image, dtype=torch.float32)[:, None], torch.tensor(mask)[:, None]


def test_perlin_noise_vanishes_on_the_lattice_and_follows_the_resolution():
    shape = (64, 64)
    resolutions = torch.tensor([[4, 4], [1, 16], [32, 2]])
    noise = perlin_noise_2d(shape, resolutions, torch.Generator().manual_seed(1))
    assert noise.shape == (3, 64, 64)
    # Gradient noise is exactly zero at lattice points: every 64/r pixels along each axis.
    for sample, (res_y, res_x) in enumerate(resolutions.tolist()):
        lattice = noise[sample, :: 64 // res_y, :: 64 // res_x]
        assert torch.allclose(lattice, torch.zeros_like(lattice), atol=1e-6)
        off_lattice = noise[sample, 64 // res_y // 2 :: 64 // res_y]
        assert off_lattice.abs().max() > 0.05
    # Finer lattices vary faster: mean absolute difference of neighbouring pixels grows with r.
    smooth, rough = perlin_noise_2d(shape, torch.tensor([[2, 2], [32, 32]]), torch.Generator().manual_seed(2))
    assert (rough.diff(dim=1).abs().mean()) > 4 * (smooth.diff(dim=1).abs().mean())
    assert noise.abs().max() <= 2**0.5


def test_perlin_noise_is_seeded():
    first = random_perlin_noise_2d(4, (96, 96), generator=torch.Generator().manual_seed(7))
    again = random_perlin_noise_2d(4, (96, 96), generator=torch.Generator().manual_seed(7))
    other = random_perlin_noise_2d(4, (96, 96), generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    with pytest.raises(ValueError, match="scale exponents"):
        random_perlin_noise_2d(1, (96, 96), scale_exponents=(0, 8))


@pytest.fixture(scope="module")
def uint8_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.standard_normal((40, 50)), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    return (255 * smooth).astype(np.uint8)


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.tensor(image / 255.0, dtype=torch.float32)[None, None]


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.7])
def test_sharpness_matches_pil(uint8_image, factor):
    expected = np.asarray(ImageEnhance.Sharpness(Image.fromarray(uint8_image)).enhance(factor), dtype=float)
    result = image_ops.enhance_sharpness(_as_tensor(uint8_image), torch.tensor([factor]))[0, 0].numpy() * 255
    # PIL rounds the smoothed image to 8 bits before blending: within 1.5 grey levels.
    assert np.abs(result - expected).max() < 1.5


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_posterize_matches_pil(uint8_image, bits):
    expected = np.asarray(ImageOps.posterize(Image.fromarray(uint8_image), bits), dtype=float)
    result = image_ops.posterize_bits(_as_tensor(uint8_image), torch.tensor([bits]))[0, 0].numpy() * 255
    np.testing.assert_allclose(result, expected, atol=1e-3)


def test_autocontrast_matches_pil_and_equalize_flattens_the_histogram(uint8_image):
    expected = np.asarray(ImageOps.autocontrast(Image.fromarray(uint8_image)), dtype=float)
    result = image_ops.autocontrast(_as_tensor(uint8_image), None)[0, 0].numpy() * 255
    assert np.abs(result - expected).max() <= 1.0  # PIL truncates to integer levels
    skewed = (_as_tensor(uint8_image) ** 3)
    equalized = image_ops.equalize(skewed, None)[0, 0].numpy().ravel()
    # Equalised values are close to uniform on [0, 1]: their quantiles lie near the diagonal.
    quantiles = np.quantile(equalized, [0.1, 0.25, 0.5, 0.75, 0.9])
    np.testing.assert_allclose(quantiles, [0.1, 0.25, 0.5, 0.75, 0.9], atol=0.05)
    order = np.argsort(skewed.numpy().ravel())
    assert np.all(np.diff(equalized[order]) >= -1e-6)  # monotone map


def test_rotate_by_right_angles_matches_rot90_and_ops_keep_the_range():
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    rotated = image_ops.rotate(images, torch.tensor([90.0, -90.0]))
    torch.testing.assert_close(rotated[0], torch.rot90(images[0], 1, (1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotated[1], torch.rot90(images[1], -1, (1, 2)), atol=1e-5, rtol=0)
    generator = torch.Generator().manual_seed(4)
    for name, op in image_ops.AUGMENTATIONS.items():
        out = op(images, generator)
        assert out.shape == images.shape, name
        assert out.min() >= 0.0 and out.max() <= 1.0, name
    torch.testing.assert_close(image_ops.invert(images, None), 1 - images)


def test_random_augment_applies_distinct_ops_per_sample():
    images = torch.rand(64, 1, 24, 24, generator=torch.Generator().manual_seed(5))
    out = image_ops.random_augment(images, 3, torch.Generator().manual_seed(6))
    assert out.shape == images.shape
    changed = (out - images).abs().flatten(1).max(dim=1).values > 1e-4
    assert changed.float().mean() > 0.9  # three ops rarely all leave a random image unchanged
    with pytest.raises(ValueError, match="distinct augmentations"):
        image_ops.random_augment(images, 10)


def test_draem_anomalies_on_real_slices(real_slices):
    images, brain = real_slices
    generator = DraemAnomalyGenerator()
    result = generator(images, brain, torch.Generator().manual_seed(0))
    again = generator(images, brain, torch.Generator().manual_seed(0))
    assert torch.equal(result.images, again.images) and torch.equal(result.masks, again.masks)
    masks = result.masks
    assert masks.shape == images.shape and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert not (masks.bool() & ~brain).any()  # inside the brain only
    # Outside the anomalies the images are untouched, inside they changed, and stay in [0, 1].
    outside = ~masks.bool()
    assert torch.equal(result.images[outside], images[outside])
    assert (result.images[masks.bool()] - images[masks.bool()]).abs().mean() > 0.02
    assert result.images.min() >= 0 and result.images.max() <= 1
    covered = masks.flatten(1).sum(1) / brain.flatten(1).sum(1)
    assert 0.005 < covered.mean() < 0.5
    # γ = 0 changes nothing (but still labels the region), γ = 1 replaces it.
    invisible = DraemAnomalyGenerator(opacity_range=(0.0, 0.0))(images, brain, torch.Generator().manual_seed(0))
    torch.testing.assert_close(invisible.images, images)
    torch.testing.assert_close(invisible.masks, masks)


def test_draem_threshold_and_probability_options(real_slices):
    images, brain = real_slices
    seed = 11
    loose = DraemAnomalyGenerator(threshold_range=(0.4, 0.4))(images, brain, torch.Generator().manual_seed(seed))
    tight = DraemAnomalyGenerator(threshold_range=(0.6, 0.6))(images, brain, torch.Generator().manual_seed(seed))
    # Same noise, higher threshold: the tight masks are subsets of the loose ones, and smaller.
    assert not (tight.masks.bool() & ~loose.masks.bool()).any()
    assert tight.masks.sum() < loose.masks.sum()
    anywhere = DraemAnomalyGenerator(within_brain=False)(images, None, torch.Generator().manual_seed(seed))
    assert (anywhere.masks.bool() & ~brain).any()
    none = DraemAnomalyGenerator(probability=0.0)(images, brain, torch.Generator().manual_seed(seed))
    assert none.masks.sum() == 0 and torch.equal(none.images, images)
    with pytest.raises(ValueError, match="brain_masks"):
        DraemAnomalyGenerator()(images)
    with pytest.raises(ValueError, match="opacity_range"):
        DraemAnomalyGenerator(opacity_range=(0.5, 1.5))


def test_sphere_anomalies_in_3d_and_2d():
    volume = torch.zeros(2, 1, 20, 30, 30)
    brain = torch.zeros_like(volume, dtype=torch.bool)
    brain[0, 0, 5:15, 10:20, 10:20] = True
    brain[1, 0] = True
    result = SphereAnomalyGenerator(radius_range=(3.0, 3.0), intensity_range=(0.9, 0.9), within_brain=False)(
        volume, brain, torch.Generator().manual_seed(0)
    )
    counts = result.masks.flatten(1).sum(1)
    # A radius-3 ball has 123 voxels on the integer grid (fewer where it meets the border).
    assert counts[1] <= 123 and counts[1] >= 60 and counts[0] >= 60
    assert torch.all(result.images[result.masks.bool()] == 0.9)
    centre_0 = torch.nonzero(result.masks[0, 0]).float().mean(0)
    assert brain[0, 0][tuple(centre_0.round().long().tolist())]
    slices = torch.zeros(3, 1, 32, 32)
    discs = SphereAnomalyGenerator()(slices, torch.ones_like(slices), torch.Generator().manual_seed(1))
    assert discs.masks.shape == (3, 1, 32, 32) and (discs.masks.flatten(1).sum(1) > 0).all()


def test_lesion_blobs_on_real_slices(real_slices):
    images, brain = real_slices
    images, brain = images.repeat(4, 1, 1, 1), brain.repeat(4, 1, 1, 1)  # 32 slices
    generator = LesionAnomalyGenerator(radius_range=(4.0, 10.0), edge_sigma=1.0)
    result = generator(images, brain, torch.Generator().manual_seed(5))
    again = generator(images, brain, torch.Generator().manual_seed(5))
    assert torch.equal(result.images, again.images) and torch.equal(result.masks, again.masks)
    assert result.images.shape == images.shape and result.images.min() >= 0 and result.images.max() <= 1

    labelled = result.masks.bool()
    assert not (labelled & ~brain).any()  # inside the brain only
    change = result.images - images
    assert (change[labelled].abs() >= generator.min_change - 1e-6).all()  # every labelled pixel visibly changed
    # Away from the blob (beyond the soft edge) and outside the brain nothing changes.
    near = torch.nn.functional.max_pool2d(labelled.float(), 9, stride=1, padding=4) > 0
    assert change[~near & ~brain].abs().max() == 0
    sizes = labelled.flatten(1).sum(1).float()
    assert (sizes > 0).float().mean() > 0.8  # a few blobs may fall where nothing visibly changes
    assert sizes.max() <= np.pi * (10.0 * (1 + generator.irregularity * 1.5)) ** 2 / 0.6
    # Some blobs are brighter than the tissue they replace, some darker.
    mean_changes = [float(change[i][labelled[i]].mean()) for i in range(32) if labelled[i].any()]
    assert min(mean_changes) < -0.1 and max(mean_changes) > 0.1


def test_lesion_blobs_edge_cases():
    images = torch.full((3, 1, 40, 40), 0.5)
    brain = torch.zeros_like(images, dtype=torch.bool)
    brain[1:, 0, 10:30, 10:30] = True  # sample 0 has no brain
    result = LesionAnomalyGenerator(bright_probability=1.0, strength_range=(1.0, 1.0), bright_range=(1.0, 1.0),
                                    edge_sigma=0.0)(images, brain, torch.Generator().manual_seed(0))
    assert result.masks[0].sum() == 0 and torch.equal(result.images[0], images[0])
    assert torch.all(result.images[1:][result.masks[1:].bool()] == 1.0)
    unchanged = LesionAnomalyGenerator(probability=0.0)(images, brain, torch.Generator().manual_seed(0))
    assert unchanged.masks.sum() == 0 and torch.equal(unchanged.images, images)
    invisible = LesionAnomalyGenerator(bright_range=(0.5, 0.5), dark_range=(0.5, 0.5))(images, brain)
    assert invisible.masks.sum() == 0  # moving 0.5 towards 0.5 is no anomaly
    with pytest.raises(ValueError, match="bright_range"):
        LesionAnomalyGenerator(bright_range=(0.9, 1.2))
    with pytest.raises(ValueError, match="radius_range"):
        LesionAnomalyGenerator(radius_range=(0.0, 3.0))


def test_tumours_on_real_slices(real_slices):
    images, brain = real_slices
    images, brain = images.repeat(4, 1, 1, 1), brain.repeat(4, 1, 1, 1)  # 32 slices
    generator = TumourAnomalyGenerator(radius_range=(5.0, 10.0))
    result = generator(images, brain, torch.Generator().manual_seed(5))
    again = generator(images, brain, torch.Generator().manual_seed(5))
    assert torch.equal(result.images, again.images) and torch.equal(result.masks, again.masks)
    assert result.images.shape == images.shape and result.images.min() >= 0 and result.images.max() <= 1
    labelled = result.masks.bool()
    assert not (labelled & ~brain).any()
    assert torch.equal(result.images[~brain], images[~brain])  # nothing changes outside the brain
    assert (labelled.flatten(1).sum(1) > 0).all()  # every tumour here changed some pixels visibly
    # an enhancing rim: in most slices some labelled pixels became brighter by 0.1 or more (not where the
    # tumour sits in white matter already as bright as its rim), in others the core or oedema darkened
    brightened = [float(change.max()) >= 0.1 for change in (result.images - images) * labelled]
    assert np.mean(brightened) >= 0.75
    darkened = [float(change.min()) <= -0.1 for change in (result.images - images) * labelled]
    assert np.mean(darkened) >= 0.5


def test_tumour_profile_rim_core_oedema_and_mass_effect():
    size = 65
    images = torch.linspace(0.3, 0.7, size).view(1, 1, 1, size).expand(1, 1, size, size).contiguous()
    brain = torch.ones_like(images, dtype=torch.bool)
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    distance = (torch.sqrt((y - 32) ** 2 + (x - 32) ** 2) / 10.0)[None, None]  # a disc of radius 10 px
    centres, radius = torch.tensor([[32.0, 32.0]]), torch.tensor([10.0])
    appearance = TumourAppearance()

    def paint(on=images, **fixed):
        draws = {"core_fraction": 0.5, "core": 0.0, "rim": 1.0, "rim_contrast": 0.2, "rim_strength": 1.0,
                 "oedema_width": 0.5, "oedema": 0.0, "oedema_strength": 0.5, "mass_effect": 0.0, **fixed}
        draws = {key: torch.tensor([float(value)]) for key, value in draws.items()}
        return paint_tumour(on, brain, distance, distance, centres, radius, draws, appearance)

    result = paint()
    image, truth = result.images[0, 0], result.masks[0, 0].bool()
    assert image[32, 32] < 0.02  # the core moved to its dark level
    assert image[32, 32 + 8] > 0.93  # the rim (d = 0.8, 2 px inside its smooth outer edge) is enhanced
    oedema = image[32, 32 + 13]  # d = 1.3: the oedema has faded to 40 % of its strength
    original = images[0, 0, 32, 32 + 13]
    assert abs(float(oedema - (original + 0.5 * 0.4 * (0.0 - original)))) < 0.02
    # The oedema is labelled where it changed the image clearly (>= min_change), not its faint fading edge.
    change = (image - images[0, 0]).abs()
    ring = (distance[0, 0] > 1.1) & (distance[0, 0] < 1.5)
    assert torch.equal(truth[ring], change[ring] >= appearance.min_change)
    assert truth[32, 32 + 13] and not truth[32, 32 + 14]  # d = 1.4: changed by ~0.06, below 0.1
    assert torch.equal(image[:, :8], images[0, 0, :, :8])  # far away nothing changes
    # Mass effect: tissue outside the tumour comes from nearer the centre (on this ramp: darker to the right).
    pushed = paint(mass_effect=0.3, oedema_width=0.0)
    outside = (distance[0, 0] > 1.6) & (distance[0, 0] < 2.0) & (x > 36)  # beyond the rim's smooth edge
    assert (pushed.images[0, 0][outside] < images[0, 0][outside] - 1e-5).all()
    assert not pushed.masks[0, 0].bool()[outside].any()  # displaced tissue is not labelled
    # A solid tumour (no core) is enhanced at its centre.
    assert paint(core_fraction=0.0).images[0, 0, 32, 32] > 0.98
    # The rim is enhanced relative to the tissue it replaces: in tissue at 0.8 a rim drawn at 0.85 still
    # rises by its contrast (0.15) to 0.95; in darker tissue (0.5) the drawn level 0.85 holds.
    for tissue, expected in ((0.8, 0.95), (0.5, 0.85)):
        flat = torch.full_like(images, tissue)
        rim = paint(flat, rim=0.85, rim_contrast=0.15, core_fraction=0.0, oedema_width=0.0).images[0, 0, 32, 32]
        assert abs(float(rim) - expected) < 0.01
    # A solid tumour in tissue already at the top of the range changes nothing visibly: nothing is labelled.
    saturated = paint(torch.ones_like(images), core_fraction=0.0, oedema_width=0.0)
    assert saturated.masks.sum() == 0 and (saturated.images - 1.0).abs().max() < 1e-6


def test_tumour_generator_edge_cases():
    images = torch.full((3, 1, 40, 40), 0.5)
    brain = torch.zeros_like(images, dtype=torch.bool)
    brain[1:, 0, 5:35, 5:35] = True  # sample 0 has no brain
    result = TumourAnomalyGenerator(radius_range=(4.0, 6.0))(images, brain, torch.Generator().manual_seed(0))
    assert result.masks[0].sum() == 0 and torch.equal(result.images[0], images[0])
    assert result.masks[1:].flatten(1).sum(1).min() > 0
    absent = TumourAnomalyGenerator(probability=0.0)(images, brain, torch.Generator().manual_seed(0))
    assert absent.masks.sum() == 0 and torch.equal(absent.images, images)
    with pytest.raises(ValueError, match="mass_effect_range"):
        TumourAppearance(mass_effect_range=(0.0, 0.6))
    with pytest.raises(ValueError, match="rim_range"):
        TumourAppearance(rim_range=(0.9, 1.1))
    with pytest.raises(ValueError, match="radius_range"):
        TumourAnomalyGenerator(radius_range=(0.0, 3.0))


def test_mixture_picks_one_generator_per_sample_by_weight(real_slices):
    images, brain = real_slices
    images, brain = images.repeat(25, 1, 1, 1), brain.repeat(25, 1, 1, 1)  # 200 slices
    draem, lesions = DraemAnomalyGenerator(), LesionAnomalyGenerator()
    mixed = AnomalyMixture((draem, lesions), (0.25, 0.75))(images, brain, torch.Generator().manual_seed(9))
    from_draem = draem(images, brain, torch.Generator().manual_seed(9))
    assert mixed.images.shape == images.shape
    # Each sample is exactly one generator's output: DRAEM's for about a quarter of them.
    is_draem = torch.tensor([torch.equal(mixed.images[i], from_draem.images[i]) for i in range(200)])
    assert 0.15 < is_draem.float().mean() < 0.35
    only_lesions = AnomalyMixture((draem, lesions), (0.0, 1.0))(images, brain, torch.Generator().manual_seed(9))
    assert not any(torch.equal(only_lesions.masks[i], from_draem.masks[i]) and from_draem.masks[i].any()
                   for i in range(200))
    with pytest.raises(ValueError, match="weights"):
        AnomalyMixture((draem, lesions), (0.0, 0.0))
