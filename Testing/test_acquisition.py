"""Simulated acquisitions on real volumes: geometry, label carry-through, determinism, noise, bias, contrast."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.augmentation.acquisition import (
    AcquisitionParams,
    bias_field,
    clinical_reacquisition,
    fine_grid,
    sample_acquisition,
    simulate_acquisition,
    slice_profile,
)


@pytest.fixture(scope="module")
def itk_t1(real_data) -> tuple[sitk.Image, sitk.Image]:
    """The ITK k-means T1 (2×2×3 mm, skull on) and its brain mask (tissue labels > 0)."""
    image = sitk.ReadImage(str(real_data("itk_kmeans_t1")), sitk.sitkFloat32)
    brain = sitk.ReadImage(str(real_data("itk_kmeans_brain_labels"))) > 0
    brain.CopyInformation(image)
    return image, brain


def _ml(mask: sitk.Image) -> float:
    return float(sitk.GetArrayViewFromImage(mask).astype(bool).sum()) * float(np.prod(mask.GetSpacing())) / 1000.0


def _centroid_mm(mask: sitk.Image) -> np.ndarray:
    k, j, i = np.nonzero(sitk.GetArrayViewFromImage(mask))
    index = np.stack([i, j, k], axis=1).mean(axis=0)
    return np.asarray(mask.TransformContinuousIndexToPhysicalPoint(index.tolist()))


def test_clinical_preset_is_axial_slabs_over_the_same_extent(itk_t1):
    image, _ = itk_t1
    params = clinical_reacquisition(6.5, seed=3)
    assert 0.8 <= params.inplane_spacing_mm <= 1.0
    out = simulate_acquisition(image, params, seed=3).image
    assert out.GetSpacing() == pytest.approx((params.inplane_spacing_mm,) * 2 + (6.5,))
    assert out.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    direction = np.abs(np.asarray(image.GetDirection()).reshape(3, 3))
    source_extent = direction @ (np.asarray(image.GetSize()) * image.GetSpacing())  # along L, P, S (mm)
    out_extent = np.asarray(out.GetSize()) * out.GetSpacing()
    assert np.all(out_extent <= source_extent + 1e-6)
    assert np.all(out_extent > source_extent - np.asarray(out.GetSpacing()))


def test_same_seed_same_volume_other_seed_other_volume(real_data):
    image = sitk.ReadImage(str(real_data("someones_anatomy")), sitk.sitkFloat32)
    params = sample_acquisition(5)
    first = sitk.GetArrayFromImage(simulate_acquisition(image, params, seed=11).image)
    again = sitk.GetArrayFromImage(simulate_acquisition(image, params, seed=11).image)
    other = sitk.GetArrayFromImage(simulate_acquisition(image, params, seed=12).image)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
    assert sample_acquisition(5) == params and sample_acquisition(6) != params


def test_labels_follow_the_rotation_and_scaling(itk_t1):
    image, brain = itk_t1
    params = AcquisitionParams(slice_thickness_mm=2.0, inplane_spacing_mm=1.2, rotation_deg=(4.0, -3.0, 10.0),
                               scale=(1.05, 0.95, 1.0))
    out = simulate_acquisition(image, params, seed=0, labels=brain)
    # the ground truth stays on the anatomy: the carried brain mask covers the re-acquired brain tissue
    source_mean = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(brain) > 0].mean()
    carried_mean = sitk.GetArrayViewFromImage(out.image)[sitk.GetArrayViewFromImage(out.labels) > 0].mean()
    assert carried_mean == pytest.approx(source_mean, rel=0.03)
    assert _ml(out.labels) == pytest.approx(_ml(brain) * 1.05 * 0.95, rel=0.04)
    # and moved where the resampling transform says (output point → source point)
    from AnomalySegLib.augmentation.acquisition import position_transform

    transform = position_transform(image, params, np.random.default_rng(0))
    expected = np.asarray(transform.GetInverse().TransformPoint(_centroid_mm(brain).tolist()))
    assert np.linalg.norm(_centroid_mm(out.labels) - expected) < 1.5
    unmoved = simulate_acquisition(image, AcquisitionParams(2.0, 1.2), seed=0, labels=brain).labels
    assert np.linalg.norm(_centroid_mm(unmoved) - _centroid_mm(brain)) < 1.0


def test_slab_averaging_keeps_thick_labels_and_drops_thin_ones(itk_t1):
    """Through the slice profile a 22 mm block keeps its extent (± one slab); a 2 mm sheet is < 50 % of
    any 6.5 mm slab and disappears, as a thin lesion does in a thick-slice scan."""
    image, brain = itk_t1
    array = sitk.GetArrayFromImage(brain).astype(np.uint8)
    superior = 2 - int(np.argmax(np.abs(np.asarray(image.GetDirection()).reshape(3, 3)[2])))  # array axis along S
    assert image.GetSpacing()[2 - superior] == 2.0  # this scan is coronal: S is its 2 mm in-plane axis
    index = [slice(None)] * 3
    block, sheet = np.zeros_like(array), np.zeros_like(array)
    index[superior] = slice(60, 71)  # 11 rows of 2 mm
    block[tuple(index)] = array[tuple(index)]
    index[superior] = slice(65, 66)  # one 2 mm row
    sheet[tuple(index)] = array[tuple(index)]
    for labels, thickness in ((block, 5.0), (sheet, 6.5)):
        mask = sitk.GetImageFromArray(labels)
        mask.CopyInformation(image)
        out = simulate_acquisition(image, AcquisitionParams(thickness, 1.0), seed=0, labels=mask).labels
        rows = np.nonzero(sitk.GetArrayViewFromImage(out).any(axis=(1, 2)))[0]
        if labels is block:
            assert abs(len(rows) * thickness - 22.0) <= thickness
        else:
            assert len(rows) == 0


def test_slice_profile_is_a_rounded_box_of_the_slice_thickness():
    step = 0.1
    weights = slice_profile(5.0, step)
    assert weights.sum() == pytest.approx(1.0)
    above_half = np.count_nonzero(weights >= weights.max() / 2) * step
    assert above_half == pytest.approx(5.0, abs=2 * step)


def test_rician_noise_has_the_requested_level(itk_t1):
    image, _ = itk_t1
    clean = simulate_acquisition(image, AcquisitionParams(3.0, 1.0), seed=4)
    noisy = simulate_acquisition(image, AcquisitionParams(3.0, 1.0, noise_fraction=0.04), seed=4)
    sigma = noisy.info["noise_sigma"]
    assert sigma == pytest.approx(0.04 * np.percentile(sitk.GetArrayViewFromImage(image), 99))
    x, y = sitk.GetArrayFromImage(clean.image), sitk.GetArrayFromImage(noisy.image)
    background, bright = x == 0, x > 10 * sigma
    assert background.sum() > 1000 and bright.sum() > 1000
    assert y[background].mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.05)  # Rayleigh mean
    assert (y - x)[bright].std() == pytest.approx(sigma, rel=0.05)


def test_bias_field_has_the_requested_amplitude_and_is_smooth(itk_t1):
    image, _ = itk_t1
    grid = fine_grid(image)
    field = bias_field(grid, 0.25, np.random.default_rng(1))
    assert field.shape == grid.GetSize()[::-1]
    log_field = np.log(field)
    assert np.abs(log_field).max() == pytest.approx(0.25, rel=1e-4)
    assert log_field.std() > 0.02
    assert np.abs(np.diff(log_field, axis=2)).max() < 0.01  # per mm: smooth on the scale of the head
    clean = sitk.GetArrayFromImage(simulate_acquisition(image, AcquisitionParams(3.0, 1.0), seed=2).image)
    biased = sitk.GetArrayFromImage(simulate_acquisition(image, AcquisitionParams(3.0, 1.0, bias_log_amplitude=0.25),
                                                         seed=2).image)
    tissue = clean > np.percentile(clean, 60)
    ratio = biased[tissue] / clean[tissue]
    assert ratio.min() >= math.exp(-0.25) - 1e-3 and ratio.max() <= math.exp(0.25) + 1e-3
    assert ratio.std() > 0.02


def test_contrast_enhanced_look_brightens_rim_and_midline_more_than_deep_brain(itk_t1):
    from scipy import ndimage

    image, brain = itk_t1
    params = AcquisitionParams(slice_thickness_mm=3.0, inplane_spacing_mm=1.0, enhancement=1.0)
    plain = sitk.GetArrayFromImage(simulate_acquisition(image, AcquisitionParams(3.0, 1.0), seed=0).image)
    out = simulate_acquisition(image, params, seed=0, labels=brain, brain_mask=brain)
    gain = sitk.GetArrayFromImage(out.image) - plain
    assert gain.min() > -1e-3  # the contrast agent only adds signal
    inside = sitk.GetArrayFromImage(out.labels) > 0
    depth = ndimage.distance_transform_edt(inside, sampling=out.labels.GetSpacing()[::-1])
    lateral = np.arange(inside.shape[2]) * out.labels.GetSpacing()[0]
    offset = np.abs(lateral - lateral[np.nonzero(inside.any(axis=(0, 1)))[0]].mean())[None, None, :]
    rim = inside & (depth < 4)
    deep = inside & (depth > 15) & (offset > 30)
    assert rim.sum() > 1000 and deep.sum() > 1000
    assert gain[rim].mean() > 2.0 * gain[deep].mean()
    assert gain[inside].mean() > 0.01 * plain[inside].mean()


def test_gamma_below_one_brightens_mid_grey(itk_t1):
    image, brain = itk_t1
    plain = simulate_acquisition(image, AcquisitionParams(3.0, 1.0), seed=0, labels=brain)
    bright = simulate_acquisition(image, AcquisitionParams(3.0, 1.0, gamma=0.7), seed=0)
    inside = sitk.GetArrayFromImage(plain.labels) > 0
    ratio = np.median(sitk.GetArrayFromImage(bright.image)[inside]) / np.median(sitk.GetArrayFromImage(plain.image)[inside])
    assert ratio > 1.05


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="thickness"):
        AcquisitionParams(slice_thickness_mm=0.0)
    with pytest.raises(ValueError, match="gamma"):
        AcquisitionParams(gamma=-1.0)


@pytest.mark.slow  # the real preprocessing, twice
def test_variant_bank_writes_case_folders_and_resumes(tmp_path, real_data, caplog):
    """scripts/build_variant_bank.py: the scan and one simulated (contrast-enhanced) variant through the real
    preprocessing into case folders carrying their acquisition; a second run finds both and builds nothing."""
    import importlib.util
    import json
    import logging
    from pathlib import Path

    from AnomalySegLib.augmentation.variant_bank import variant_seed
    from AnomalySegLib.preprocessing.case_folder import load_case, read_info

    real_data("someones_anatomy")
    script = Path(__file__).resolve().parent.parent / "scripts" / "build_variant_bank.py"
    spec = importlib.util.spec_from_file_location("build_variant_bank", script)
    bank = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bank)
    argv = ["--out", str(tmp_path), "--variants", "1", "--sources", "someones_anatomy"]
    assert bank.main(argv) == 0
    folders = sorted(tmp_path.glob("*/someones_anatomy/*"))
    assert [f.name for f in folders] == ["someones_anatomy_v000", "someones_anatomy_v001"]
    simulated = read_info(folders[1])["info"]["acquisition"]
    assert simulated["identity"] is False and simulated["seed"] == variant_seed("someones_anatomy", 1, 0)
    assert AcquisitionParams(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in simulated["params"].items()}) == sample_acquisition(simulated["seed"])
    assert simulated["params"]["enhancement"] > 0  # so the dural map went through the registration too
    case = load_case(folders[1])
    assert case.image.shape == case.mask.shape and case.mask.any()
    assert json.loads((folders[0].parent.parent / "spec.json").read_text(encoding="utf-8"))["grid"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="build_variant_bank"):
        assert bank.main(argv) == 0
    assert "0 built, 2 already there" in caplog.text
