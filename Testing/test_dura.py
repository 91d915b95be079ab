"""The dural map (AnomalySegLib/augmentation/dura.py) on the real ICBM 2009c template, and what the simulated
contrast-enhanced look does with it (AnomalySegLib/augmentation/acquisition.py)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from AnomalySegLib.augmentation.acquisition import DURA_LEVEL, REFERENCE_PERCENTILE, AcquisitionParams, simulate_acquisition
from AnomalySegLib.augmentation.dura import (SHEET_WEIGHT, VALLEY_REACH_MM, dural_map, native_dural_map,
                                            tentorium_coefficients)
from AnomalySegLib.preprocessing.template import load_template


@pytest.fixture(scope="module")
def template():
    return load_template("icbm2009c")


@pytest.fixture(scope="module")
def weight(template) -> sitk.Image:
    return dural_map("icbm2009c")


def _at(image: sitk.Image, lps_mm: tuple[float, float, float]) -> float:
    return float(image[image.TransformPhysicalPointToIndex(lps_mm)])


def _tent_z(template, x: float, y: float) -> float:
    from AnomalySegLib.augmentation.dura import _tent_terms

    return float(_tent_terms(np.array(x), np.array(y)) @ tentorium_coefficients(template.t1, template.mask))


@pytest.mark.parametrize("x, y", [(-25.0, 70.0), (25.0, 70.0), (-10.0, 55.0), (40.0, 80.0)])
def test_the_fitted_tentorium_lies_in_the_dark_cleft_above_the_cerebellum(template, x, y):
    """Along the vertical column, the fitted surface sits in a valley of the (smoothed) template: darker
    than the brightest tissue within the valley reach above and below it, by ≥ 10 % of the median brain
    (the detector keeps points from 15 %; near the incisura the cleft is shallower)."""
    z = _tent_z(template, x, y)
    assert -35.0 < z < 0.0
    smooth = sitk.SmoothingRecursiveGaussian(template.t1, 1.0)
    median = float(np.median(sitk.GetArrayViewFromImage(template.t1)[sitk.GetArrayViewFromImage(template.mask) > 0]))
    valley = min(_at(smooth, (x, y, z + dz)) for dz in (-1.0, 0.0, 1.0))  # the fit is good to ~1 mm
    above = max(_at(smooth, (x, y, z + dz)) for dz in np.arange(1.0, VALLEY_REACH_MM + 1))
    below = max(_at(smooth, (x, y, z - dz)) for dz in np.arange(1.0, VALLEY_REACH_MM + 1))
    assert min(above, below) - valley > 0.1 * median


def test_dural_map_marks_the_dura_and_sinuses_and_spares_the_brain(template, weight):
    assert weight.GetSize() == template.t1.GetSize()
    array = sitk.GetArrayViewFromImage(weight)
    assert array.min() >= 0.0 and array.max() <= 1.0
    # the superior sagittal sinus: midline, where the brain mask ends above the central region
    brain = sitk.GetArrayViewFromImage(template.mask) > 0
    i, j, _ = template.t1.TransformPhysicalPointToIndex((0.0, 0.0, 0.0))
    top = template.t1.TransformIndexToPhysicalPoint((i, j, int(np.flatnonzero(brain[:, j, i]).max())))
    assert _at(weight, top) > 0.8  # a sinus of σ 2 mm centred on the mask surface, 1 mm away
    # the tentorium (a sheet) and the straight sinus (midline, on the tentorium)
    assert _at(weight, (25.0, 70.0, _tent_z(template, 25.0, 70.0))) == pytest.approx(SHEET_WEIGHT, abs=0.1)
    assert _at(weight, (0.0, 70.0, _tent_z(template, 0.0, 70.0) + 2.0)) > 0.9
    # the falx: the mid-sagittal plane above the corpus callosum, thin
    assert _at(weight, (0.0, 10.0, 50.0)) > 0.5 * SHEET_WEIGHT
    assert _at(weight, (5.0, 10.0, 50.0)) < 0.05
    # deep brain (thalamus, centrum semiovale, cerebellar hemisphere, pons) stays untouched
    for point in [(12.0, 18.0, 6.0), (-25.0, 0.0, 30.0), (25.0, 60.0, -40.0), (0.0, 25.0, -30.0)]:
        assert _at(weight, point) < 0.05, point
    # nothing far outside the brain (scalp, skull)
    outside = ndimage.distance_transform_edt(~brain) > 8
    assert array[outside].max() == 0.0


def test_the_dural_map_needs_a_template_in_mni_space():
    with pytest.raises(ValueError, match="MNI"):
        dural_map("sri24")


def test_native_dural_map_follows_the_registration(template, weight):
    """Template → native points shifted by 10 mm along x: the map lands 10 mm further along x."""
    same = native_dural_map(template.t1, sitk.TranslationTransform(3, (0.0, 0.0, 0.0)))
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(same), sitk.GetArrayViewFromImage(weight), atol=1e-5)
    moved = native_dural_map(template.t1, sitk.TranslationTransform(3, (10.0, 0.0, 0.0)))
    for point in [(0.0, 70.0, _tent_z(template, 0.0, 70.0) + 2.0), (25.0, 70.0, _tent_z(template, 25.0, 70.0))]:
        shifted = (point[0] + 10.0, point[1], point[2])
        assert _at(moved, shifted) == pytest.approx(_at(weight, point), abs=1e-4)


def test_enhancement_raises_the_dura_by_its_level_and_nothing_without_contrast(real_data):
    """A block of dural weight 1 on the real ITK T1 (2×2×3 mm): the contrast-enhanced look adds
    strength × DURA_LEVEL × r inside it (r = the 99th percentile), nothing far from it, and nothing at all
    when the acquisition has no contrast enhancement."""
    image = sitk.ReadImage(str(real_data("itk_kmeans_t1")), sitk.sitkFloat32)
    block = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.float32)
    block[20:40, 40:80, 40:80] = 1.0  # 60 × 80 × 80 mm (z × y × x)
    dura = sitk.GetImageFromArray(block)
    dura.CopyInformation(image)
    reference = float(np.percentile(sitk.GetArrayViewFromImage(image), REFERENCE_PERCENTILE))
    enhanced = AcquisitionParams(slice_thickness_mm=3.0, inplane_spacing_mm=2.0, enhancement=1.2)
    gain = (sitk.GetArrayFromImage(simulate_acquisition(image, enhanced, seed=0, dura=dura).image)
            - sitk.GetArrayFromImage(simulate_acquisition(image, enhanced, seed=0).image))
    out_block = simulate_acquisition(image, AcquisitionParams(3.0, 2.0), seed=0,
                                     labels=sitk.Cast(dura > 0.5, sitk.sitkUInt8)).labels
    inside = ndimage.binary_erosion(sitk.GetArrayFromImage(out_block) > 0, iterations=3)
    far = ~ndimage.binary_dilation(sitk.GetArrayFromImage(out_block) > 0, iterations=5)
    assert inside.sum() > 1000
    np.testing.assert_allclose(gain[inside], 1.2 * DURA_LEVEL * reference, rtol=1e-3)
    assert np.abs(gain[far]).max() < 1e-3 * reference
    plain = AcquisitionParams(3.0, 2.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(simulate_acquisition(image, plain, seed=0, dura=dura).image),
                                  sitk.GetArrayFromImage(simulate_acquisition(image, plain, seed=0).image))


def test_a_dural_map_on_another_grid_is_refused(real_data):
    image = sitk.ReadImage(str(real_data("itk_kmeans_t1")), sitk.sitkFloat32)
    with pytest.raises(ValueError, match="dura grid"):
        simulate_acquisition(image, AcquisitionParams(enhancement=1.0), dura=sitk.Image([8, 8, 8], sitk.sitkFloat32))
