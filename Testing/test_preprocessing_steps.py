"""Each preprocessing step on its own, on real volumes (fast: no registration here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.preprocessing import case_folder
from AnomalySegLib.preprocessing.bias_field import estimate_bias_field
from AnomalySegLib.preprocessing.brain_mask import head_mask, skull_stripped_mask
from AnomalySegLib.preprocessing.intensity import denoise_curvature_flow, percentile_range, rescale_to_unit
from AnomalySegLib.preprocessing.model_space import antialias, model_reference, resample_to_model
from AnomalySegLib.preprocessing.orientation import reorient_to_lps, resample_isotropic
from AnomalySegLib.preprocessing.pipeline import PreprocessedCase
from AnomalySegLib.preprocessing.restore import restore_to_native
from AnomalySegLib.preprocessing.spec import (
    BiasFieldSpec,
    BrainMaskSpec,
    ModelGrid,
    TEMPLATE_BRAIN_CENTRES_MM,
    PreprocessingSpec,
    SpecError,
    with_template,
)
from AnomalySegLib.preprocessing.template import load_template
from AnomalySegLib.resources import resources_dir


def read(real_data, name: str) -> sitk.Image:
    return sitk.ReadImage(str(real_data(name)), sitk.sitkFloat32)


# --- spec -------------------------------------------------------------------------------------------

def test_spec_json_round_trip_keeps_every_field():
    spec = PreprocessingSpec(working_spacing_mm=1.5, percentiles=(2.0, 98.0),
                             bias_field=BiasFieldSpec(shrink_factor=3),
                             grid=ModelGrid(size=(64, 64, 40), origin=(-63.0, -60.0, -30.0)))
    text = json.dumps(spec.to_dict())
    assert json.loads(text)["version"] == 1
    assert PreprocessingSpec.from_dict(json.loads(text)) == spec
    assert PreprocessingSpec.from_dict(PreprocessingSpec().to_dict()) == PreprocessingSpec()


@pytest.mark.parametrize("data, field", [
    ({"version": 2}, "version"),
    ({"percentiles": [99, 1]}, "percentiles"),
    ({"grid": {"size": [96, 96, 0]}}, "grid.size"),
    ({"grid": {"direction": [1, 0, 0, 0, 1, 0, 0, 0, -1]}}, "grid.direction"),
    ({"registration": {"similarity_shrink_factors": [4, 2], "similarity_smoothing_sigmas_mm": [1]}},
     "registration.similarity_shrink_factors"),
    ({"denoise_steps": 3}, "denoise_steps"),
    ({"bias_field": {"shrink": 4}}, "bias_field.shrink"),
    ({"template": "colin27"}, "template"),
])
def test_spec_rejects_invalid_fields_naming_them(data, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        PreprocessingSpec.from_dict(data)


def brain_centre(mask: sitk.Image) -> tuple[float, float, float]:
    """Physical centre (mm) of the bounding box of a 0/1 mask."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    box = stats.GetBoundingBox(1)
    low = mask.TransformIndexToPhysicalPoint(box[:3])
    high = mask.TransformIndexToPhysicalPoint([box[i] + box[i + 3] - 1 for i in range(3)])
    return tuple((a + b) / 2 for a, b in zip(low, high))


def test_default_model_grid_is_the_papers_crop_around_the_template_brain():
    """192×192×160 at 1 mm centred on the template brain's bounding box → ×2 → drop 15+15 slices."""
    derived = ModelGrid.from_crop(brain_centre(load_template().mask))
    assert derived == ModelGrid()
    assert derived.size == (96, 96, 50) and derived.spacing == (2.0, 2.0, 2.0)
    assert derived.array_shape == (50, 96, 96)


@pytest.mark.parametrize("name", ["icbm2009c", "sri24"])
def test_template_brain_centres_are_the_templates(real_data, name):
    assert brain_centre(load_template(name).mask) == pytest.approx(TEMPLATE_BRAIN_CENTRES_MM[name], abs=1e-6)


def test_a_grid_of_another_template_is_refused():
    assert with_template(PreprocessingSpec(), "icbm2009c") == PreprocessingSpec()
    sri24 = with_template(PreprocessingSpec(), "sri24")
    assert sri24.grid.centre == pytest.approx(TEMPLATE_BRAIN_CENTRES_MM["sri24"], abs=1.0)
    with pytest.raises(SpecError, match="grid .*another template"):
        PreprocessingSpec(template="sri24")
    with pytest.raises(SpecError, match="template"):
        with_template(PreprocessingSpec(), "colin27")


def test_model_grid_axial_slices_run_inferior_to_superior():
    reference = model_reference(ModelGrid())
    bottom = reference.TransformIndexToPhysicalPoint((0, 0, 0))
    top = reference.TransformIndexToPhysicalPoint((0, 0, 49))
    assert top[2] - bottom[2] == pytest.approx(98.0)  # LPS z = superior
    assert bottom[:2] == top[:2]  # array[z] is a plane of constant z


# --- template ---------------------------------------------------------------------------------------

def test_committed_template_is_compact_and_covers_the_model_grid():
    folder = resources_dir() / "Templates" / "icbm2009c"
    assert sum(p.stat().st_size for p in folder.glob("*.nii.gz")) < 6e6
    assert "Licence" in (folder / "README.md").read_text(encoding="utf-8")
    template = load_template()
    assert template.t1.GetSpacing() == (1.0, 1.0, 1.0)
    mask_in_grid = resample_to_model(template.mask, sitk.Transform(), ModelGrid(), binary=True)
    brain_ml = np.count_nonzero(sitk.GetArrayViewFromImage(template.mask)) / 1000
    assert 1500 < brain_ml < 2100
    # the dropped slices cut off the top of the cortex and the cerebellum base, nothing else
    inside = sitk.GetArrayViewFromImage(mask_in_grid)
    assert inside[25].mean() > 0.4 and inside[:, 0].sum() == 0 and inside[:, :, 0].sum() == 0


def test_sri24_template_is_made_from_its_skull_stripped_t1(real_data):
    """SRI24 (fetched on first use): the stripped T1 serves as both T1s; its brain is the non-zero region."""
    template = load_template("sri24")
    assert template.t1 is template.t1_brain and template.t1.GetSpacing() == (1.0, 1.0, 1.0)
    brain_ml = np.count_nonzero(sitk.GetArrayViewFromImage(template.mask)) / 1000
    assert 1300 < brain_ml < 1700  # SRI24's brain incl. ventricles (ICBM 2009c's mask: ~1890 ml with CSF)
    spec = with_template(PreprocessingSpec(), "sri24")
    assert spec.template == "sri24" and spec.grid.size == ModelGrid().size and spec.grid != ModelGrid()
    inside = sitk.GetArrayFromImage(resample_to_model(template.mask, sitk.Transform(), spec.grid, binary=True))
    assert inside[25].mean() > 0.4 and inside[:, 0].sum() == 0 and inside[:, :, 0].sum() == 0


def test_unknown_template_is_refused_naming_it():
    with pytest.raises(InputError, match="colin27"):
        load_template("colin27")


# --- orientation and resampling ---------------------------------------------------------------------

def test_reorient_to_lps_keeps_values_at_the_same_physical_points(real_data):
    image = read(real_data, "mrhead")  # stored PIR
    lps = reorient_to_lps(image)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(lps.GetDirection()) == "LPS"
    for index in [(10, 20, 30), (128, 100, 60), (200, 50, 120)]:
        point = image.TransformIndexToPhysicalPoint(index)
        assert lps[lps.TransformPhysicalPointToIndex(point)] == image[index]


def test_resample_isotropic_keeps_the_physical_extent(real_data):
    image = read(real_data, "mrbraintumor1")  # 0.94 × 0.94 × 1.4 mm
    working = resample_isotropic(image, 1.0)
    assert working.GetSpacing() == (1.0, 1.0, 1.0)
    extent = [n * s for n, s in zip(image.GetSize(), image.GetSpacing())]
    assert all(abs(n - e) <= 1.0 for n, e in zip(working.GetSize(), extent))
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    index = working.TransformPhysicalPointToIndex(centre)
    assert abs(working[index] - image[image.TransformPhysicalPointToIndex(centre)]) < 0.25 * np.ptp(
        sitk.GetArrayViewFromImage(image))


# --- brain mask -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, stripped", [
    ("sri24_t1_brain", True), ("icbm2009a_t1_brain", True), ("colin27_t1_brain", True),
    ("colin27_t1", False), ("mrhead", False), ("mrbraintumor1", False), ("itk_kmeans_t1", False),
])
def test_skull_stripped_input_is_recognised(real_data, name, stripped):
    image = resample_isotropic(reorient_to_lps(read(real_data, name)), 1.0)
    mask = skull_stripped_mask(image, BrainMaskSpec())
    assert (mask is not None) == stripped
    if stripped:
        volume_ml = np.count_nonzero(sitk.GetArrayViewFromImage(mask)) / 1000
        assert 1100 < volume_ml < 2100


def test_head_mask_covers_the_head_not_the_background(real_data):
    image = read(real_data, "colin27_t1")
    head = sitk.GetArrayFromImage(head_mask(image))
    volume_ml = head.sum() * np.prod(image.GetSpacing()) / 1000
    assert 2500 < volume_ml < 5000
    brain = sitk.GetArrayFromImage(read(real_data, "colin27_t1_brain")) > 0
    assert head[brain].mean() > 0.99


# --- bias field -------------------------------------------------------------------------------------

def test_n4_removes_a_known_smooth_bias_field(real_data):
    clean = read(real_data, "colin27_t1_brain")
    brain = sitk.Cast(clean > 0, sitk.sitkUInt8)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in clean.GetSize()[::-1]], indexing="ij")
    field = np.exp(0.3 * x + 0.2 * z - 0.15 * y * y).astype(np.float32)  # ±30 % across the head
    biased = sitk.GetImageFromArray(sitk.GetArrayFromImage(clean) * field)
    biased.CopyInformation(clean)
    corrected = estimate_bias_field(biased, brain, BiasFieldSpec()).correct(biased)

    inside = sitk.GetArrayViewFromImage(brain) > 0
    truth = sitk.GetArrayViewFromImage(clean)[inside]

    def spread_of_ratio(image: sitk.Image) -> float:  # a bias-free image is the truth times a constant
        ratio = np.log(sitk.GetArrayViewFromImage(image)[inside] / truth)
        return float(np.std(ratio))

    assert spread_of_ratio(corrected) < 0.5 * spread_of_ratio(biased)


def test_n4_without_a_mask_fits_inside_the_head(real_data):
    """Skull-on input (no brain mask yet): the head found on the shrunk image is the fit's mask; the
    known field is removed inside the brain as well as with the brain mask."""
    clean = read(real_data, "colin27_t1")
    brain = sitk.GetArrayFromImage(read(real_data, "colin27_t1_brain")) > 0
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in clean.GetSize()[::-1]], indexing="ij")
    field = np.exp(0.3 * x + 0.2 * z - 0.15 * y * y).astype(np.float32)
    biased = sitk.GetImageFromArray(sitk.GetArrayFromImage(clean) * field)
    biased.CopyInformation(clean)
    corrected = estimate_bias_field(biased, None, BiasFieldSpec()).correct(biased)

    truth = sitk.GetArrayViewFromImage(clean)[brain]
    ratio = np.log(sitk.GetArrayViewFromImage(corrected)[brain] / truth)
    assert np.std(ratio) < 0.5 * np.std(np.log(field[brain]))


# --- model space ------------------------------------------------------------------------------------

def test_antialias_smooths_only_axes_finer_than_the_target():
    image = sitk.Image([40, 40, 20], sitk.sitkFloat32)
    image.SetSpacing([0.5, 0.5, 3.0])
    image[20, 20, 10] = 1.0
    smoothed = sitk.GetArrayFromImage(antialias(image, (2.0, 2.0, 2.0)))
    assert smoothed[10, 20, 20] < 0.5 and smoothed[10, 20, 21] > 0  # spread in-plane
    assert smoothed[9, 20, 20] == pytest.approx(0.0, abs=1e-6)  # not across the 3 mm slices


def test_binary_resampling_into_model_space_gives_a_0_1_mask(real_data):
    mask = load_template().mask
    model = resample_to_model(mask, sitk.Transform(), ModelGrid(), binary=True)
    assert model.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(model))) == {0, 1}
    ml = np.count_nonzero(sitk.GetArrayViewFromImage(model)) * 8 / 1000
    assert 1000 < ml < 1900  # the grid holds most of the brain (cut at top and bottom)


# --- intensity --------------------------------------------------------------------------------------

def test_curvature_flow_reduces_noise_but_keeps_edges():
    rng = np.random.default_rng(0)
    step = np.zeros((30, 40, 40), np.float32)
    step[:, :, 20:] = 1.0
    noisy_array = step + rng.normal(0, 0.1, step.shape).astype(np.float32)
    noisy = sitk.GetImageFromArray(noisy_array)
    noisy.SetSpacing([2.0, 2.0, 2.0])
    denoised = sitk.GetArrayFromImage(denoise_curvature_flow(noisy, 0.125, 3))
    assert np.std(denoised[:, :, 5:15]) < 0.8 * np.std(noisy_array[:, :, 5:15])
    assert denoised[:, :, 22:].mean() - denoised[:, :, :18].mean() > 0.9


def test_rescale_maps_brain_percentiles_to_0_1_and_zeroes_outside(real_data):
    image = read(real_data, "colin27_t1")
    mask = sitk.Cast(read(real_data, "colin27_t1_brain") > 0, sitk.sitkUInt8)
    scaled = sitk.GetArrayFromImage(rescale_to_unit(image, mask, percentile_range(image, mask, 1.0, 99.0)))
    inside = sitk.GetArrayViewFromImage(mask) > 0
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert np.all(scaled[~inside] == 0)
    assert np.mean(scaled[inside] == 1.0) == pytest.approx(0.01, abs=0.005)
    assert np.mean(scaled[inside] == 0.0) == pytest.approx(0.01, abs=0.005)


def test_rescale_refuses_an_empty_mask(real_data):
    image = read(real_data, "nibabel_anatomical")
    with pytest.raises(ValueError, match="empty"):
        percentile_range(image, sitk.Cast(image * 0, sitk.sitkUInt8))


# --- restore ----------------------------------------------------------------------------------------

def test_restore_gives_exactly_the_reference_grid_and_inverts_the_transform(real_data):
    reference = read(real_data, "mrhead")  # PIR, 1 × 1 × 1.3 mm
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([1.05, 0.05, 0, -0.04, 0.95, 0, 0, 0.02, 1.1])
    transform.SetTranslation([3.0, -7.0, 12.0])
    model_array = np.zeros(ModelGrid().array_shape, np.float32)
    model_array[20:30, 40:56, 30:50] = 1.0  # a 20 × 32 × 40 mm box
    restored = restore_to_native(model_array, reference, transform, kind="binary")
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(restored, getter)() == getattr(reference, getter)()
    # forward again: sample the restored box back into model space through the transform
    forward = resample_to_model(restored, transform, ModelGrid(), binary=True)
    back = sitk.GetArrayFromImage(forward) > 0
    dice = 2 * np.sum(back & (model_array > 0)) / (back.sum() + (model_array > 0).sum())
    assert dice > 0.95
    native_ml = np.count_nonzero(sitk.GetArrayViewFromImage(restored)) * np.prod(reference.GetSpacing()) / 1000
    determinant = np.linalg.det(np.array(transform.GetMatrix()).reshape(3, 3))
    assert native_ml == pytest.approx(20 * 32 * 40 / 1000 * determinant, rel=0.05)


def test_restore_continuous_is_linear_and_zero_outside_model_space(real_data):
    reference = read(real_data, "mrbraintumor1")
    ramp = np.broadcast_to(np.linspace(0, 1, 96, dtype=np.float32), ModelGrid().array_shape).copy()
    restored = sitk.GetArrayFromImage(restore_to_native(ramp, reference, sitk.AffineTransform(3)))
    assert restored.dtype == np.float32 and restored.max() <= 1.0 and restored.min() >= 0.0
    assert restored[0].max() == 0.0  # the lowest native slice lies below the model grid
    grid_inside = restored[restored > 0]
    assert grid_inside.size > 0 and 0.3 < grid_inside.mean() < 0.7


def test_restore_refuses_arrays_of_the_wrong_shape(real_data):
    with pytest.raises(ValueError, match="50, 96, 96"):
        restore_to_native(np.zeros((96, 96, 50), np.float32), read(real_data, "mrhead"), sitk.AffineTransform(3))


# --- case folder ------------------------------------------------------------------------------------

def small_case() -> PreprocessedCase:
    grid = ModelGrid()
    image = sitk.GetImageFromArray(np.random.default_rng(1).random(grid.array_shape, dtype=np.float32))
    image.CopyInformation(model_reference(grid))
    mask = sitk.Cast(image > 0.2, sitk.sitkUInt8)
    transform = sitk.AffineTransform(3)
    transform.SetTranslation([1.5, -2.25, 3.125])
    return PreprocessedCase(image=image, mask=mask, labels=sitk.Cast(image > 0.9, sitk.sitkUInt8),
                            transform=transform, spec=PreprocessingSpec(), info={"mask_source": "given"})


def test_case_folder_round_trip(tmp_path: Path):
    case = small_case()
    folder = case_folder.write_case(case, tmp_path / "case1")
    loaded = case_folder.load_case(folder)
    image, mask, labels = case.arrays()
    assert loaded.case_id == "case1"
    np.testing.assert_array_equal(loaded.image, image)
    np.testing.assert_array_equal(loaded.mask, mask)
    np.testing.assert_array_equal(loaded.labels, labels)
    transform = case_folder.read_transform(folder / case_folder.TRANSFORM_FILE)
    assert transform.TransformPoint((0.0, 0.0, 0.0)) == pytest.approx((1.5, -2.25, 3.125))
    document = case_folder.read_info(folder)
    assert PreprocessingSpec.from_dict(document["spec"]) == PreprocessingSpec()
    assert document["info"]["mask_source"] == "given"
    assert case_folder.list_cases(tmp_path) == [folder]


def test_case_folder_is_never_overwritten_silently_nor_left_half_written(tmp_path: Path):
    case = small_case()
    folder = case_folder.write_case(case, tmp_path / "case1")
    with pytest.raises(OutputExistsError):
        case_folder.write_case(case, folder)
    broken = PreprocessedCase(image=case.image, mask=case.mask, labels=None, transform=None,  # type: ignore[arg-type]
                              spec=case.spec, info={})
    with pytest.raises(TypeError):
        case_folder.write_case(broken, tmp_path / "case2")
    with pytest.raises(TypeError):
        case_folder.write_case(broken, folder, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case1"]  # no temporary folder left
    assert case_folder.load_case(folder).labels is not None  # the old case is intact
    case_folder.write_case(PreprocessedCase(case.image, case.mask, None, case.transform, case.spec, {}),
                           folder, overwrite=True)
    assert case_folder.load_case(folder).labels is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case1"]
    assert math.isclose(folder.stat().st_mode & 0o700, 0o700)
