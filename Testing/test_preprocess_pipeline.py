"""The whole preprocessing on real volumes, and the exact way back to the native grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.preprocessing import (
    ModelGrid,
    PreprocessedCase,
    list_cases,
    load_case,
    preprocess_file,
    preprocess_image,
    read_info,
    read_transform,
    restore_to_native,
    write_case,
)
from AnomalySegLib.preprocessing.case_folder import TRANSFORM_FILE
from AnomalySegLib.preprocessing.model_space import resample_to_model
from AnomalySegLib.preprocessing.pipeline import MASK_SKULL_STRIPPED_INPUT, MASK_TEMPLATE, field_of_view
from AnomalySegLib.preprocessing.spec import WHOLE_BRAIN_GRID, PreprocessingSpec, with_template
from AnomalySegLib.preprocessing.template import load_template

pytestmark = pytest.mark.slow

TUMOUR_LABEL = 9  # value of the tumour in mrbraintumor1_labels (other values are synthetic shapes)

# Correlation with the template (skull-stripped T1) inside the brain mask, after preprocessing. Measured:
# Colin27 0.69, MRHead 0.62, SRI24 0.78; the same model-space images shifted by 10 mm score
# 0.34 (Colin27) and 0.37 (MRHead). A floor of 0.5 therefore fails for a registration that is off
# by about a centimetre or more, and passes for healthy T1 scans of ordinary contrast.
TEMPLATE_CORRELATION_FLOOR = 0.5


def correlation(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.corrcoef(a[where], b[where])[0, 1])


@pytest.fixture(scope="session")
def template_in_model_space() -> np.ndarray:
    return sitk.GetArrayFromImage(resample_to_model(load_template().t1_brain, sitk.Transform(), ModelGrid()))


@pytest.fixture(scope="session")
def tumour_case(real_data) -> PreprocessedCase:
    return preprocess_file(real_data("mrbraintumor1"), labels_path=real_data("mrbraintumor1_labels"),
                           label_values=[TUMOUR_LABEL])


@pytest.fixture(scope="session")
def colin27(real_data) -> sitk.Image:
    return sitk.ReadImage(str(real_data("colin27_t1")), sitk.sitkFloat32)


@pytest.fixture(scope="session")
def colin27_case(colin27) -> PreprocessedCase:
    return preprocess_image(colin27)


def check_model_space_image(case: PreprocessedCase) -> tuple[np.ndarray, np.ndarray]:
    image, mask, _ = case.arrays()
    assert image.shape == mask.shape == (50, 96, 96)
    assert image.dtype == np.float32 and image.min() == 0.0 and image.max() == 1.0
    assert np.all(image[~mask] == 0)
    assert 0.3 < mask.mean() < 0.7  # the brain fills a good part of the crop (template mask: 45 %)
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(case.image, getter)() == getattr(case.mask, getter)()
    return image, mask


def test_tumour_label_survives_preprocess_and_restore(tumour_case, real_data):
    """MRBrainTumor1's tumour (label 9) → model space → native grid: Dice ≥ 0.85 with the original."""
    labels = sitk.ReadImage(str(real_data("mrbraintumor1_labels")))
    truth = sitk.GetArrayFromImage(labels) == TUMOUR_LABEL
    _, _, model_labels = tumour_case.arrays()
    assert model_labels is not None and model_labels.sum() > 500  # ~13 ml at 8 µl per voxel

    restored = restore_to_native(tumour_case.labels, labels, tumour_case.transform, kind="binary")

    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(restored, getter)() == getattr(labels, getter)()
    found = sitk.GetArrayFromImage(restored) > 0
    dice = 2 * np.sum(found & truth) / (found.sum() + truth.sum())
    assert dice >= 0.85, f"Dice {dice:.3f}"


def test_tumour_case_model_space_image(tumour_case):
    check_model_space_image(tumour_case)
    info = tumour_case.info
    assert info["mask_source"] == MASK_TEMPLATE
    assert info["native_geometry"]["size"] == [256, 256, 112]
    assert set(info["timings_s"]) >= {"bias_field", "registration", "resample_to_model"}


def test_restored_reconstruction_lies_on_the_input(tumour_case, real_data):
    """A continuous model-space map (the preprocessed image itself) restored to the native grid
    correlates with the native image inside the brain: the way back is the right way."""
    native = sitk.ReadImage(str(real_data("mrbraintumor1")), sitk.sitkFloat32)
    restored = sitk.GetArrayFromImage(restore_to_native(tumour_case.image, native, tumour_case.transform))
    brain = restore_to_native(tumour_case.mask, native, tumour_case.transform, kind="binary")
    inside = sitk.GetArrayFromImage(brain) > 0
    assert correlation(restored, sitk.GetArrayFromImage(native), inside) > 0.8


def test_case_folder_of_a_real_case(tumour_case, tmp_path: Path):
    folder = write_case(tumour_case, tmp_path / "mrbraintumor1")
    loaded = load_case(folder)
    image, mask, labels = tumour_case.arrays()
    np.testing.assert_array_equal(loaded.image, image)
    np.testing.assert_array_equal(loaded.labels, labels)
    transform = read_transform(folder / TRANSFORM_FILE)
    point = (10.0, -20.0, 30.0)
    assert transform.TransformPoint(point) == pytest.approx(tumour_case.transform.TransformPoint(point), abs=1e-6)
    assert read_info(folder)["info"]["mask_source"] == MASK_TEMPLATE
    assert list_cases(tmp_path) == [folder]


def test_pir_oriented_mrhead_lands_on_the_template(real_data, template_in_model_space):
    case = preprocess_file(real_data("mrhead"))
    image, mask = check_model_space_image(case)
    assert correlation(image, template_in_model_space, mask) > TEMPLATE_CORRELATION_FLOOR


def test_colin27_lands_on_the_template(colin27_case, template_in_model_space):
    image, mask = check_model_space_image(colin27_case)
    assert colin27_case.info["mask_source"] == MASK_TEMPLATE
    assert correlation(image, template_in_model_space, mask) > TEMPLATE_CORRELATION_FLOOR


def test_oblique_volume_gives_the_same_model_space_image(colin27, colin27_case):
    """Colin27 with its direction matrix (and origin) rotated by (12°, −8°, 15°): the same voxels now
    sit elsewhere in physical space, and registration must find them again."""
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(*np.radians([12.0, -8.0, 15.0]))
    matrix = np.array(rotation.GetMatrix()).reshape(3, 3)
    oblique = sitk.Image(colin27)
    oblique.SetDirection((matrix @ np.array(colin27.GetDirection()).reshape(3, 3)).ravel().tolist())
    oblique.SetOrigin((matrix @ np.array(colin27.GetOrigin())).tolist())
    assert np.sort(np.abs(oblique.GetDirection()))[:6].max() > 0.1  # truly oblique, not a permutation

    case = preprocess_image(oblique)

    image, mask = check_model_space_image(case)
    reference, _ = check_model_space_image(colin27_case)
    assert correlation(image, reference, mask) > 0.95


def test_thick_slice_volume_gives_a_similar_model_space_image(colin27, colin27_case, template_in_model_space):
    """Colin27 resampled to 5 mm axial slices (Gaussian slice profile, σ = 2 mm)."""
    smoothed = sitk.SmoothingRecursiveGaussian(colin27, [0.01, 0.01, 2.0])
    size = list(colin27.GetSize())
    size[2] = int(size[2] * colin27.GetSpacing()[2] / 5.0)
    thick = sitk.Resample(smoothed, size, sitk.Transform(), sitk.sitkLinear, colin27.GetOrigin(),
                          (colin27.GetSpacing()[0], colin27.GetSpacing()[1], 5.0), colin27.GetDirection())

    case = preprocess_image(thick)

    image, mask = check_model_space_image(case)
    reference, _ = check_model_space_image(colin27_case)
    assert correlation(image, reference, mask) > 0.9
    assert correlation(image, template_in_model_space, mask) > TEMPLATE_CORRELATION_FLOOR


def test_skull_stripped_sri24_uses_its_own_brain_mask(real_data, template_in_model_space):
    case = preprocess_file(real_data("sri24_t1_brain"))
    image, mask = check_model_space_image(case)
    assert case.info["mask_source"] == MASK_SKULL_STRIPPED_INPUT
    assert case.info["registration"]["fixed"] == "t1_brain"
    assert correlation(image, template_in_model_space, mask) > TEMPLATE_CORRELATION_FLOOR


def test_skull_stripped_colin27_lands_on_sri24(real_data):
    """SRI24 as the template (the paper's atlas): a real skull-stripped scan registered to it matches
    it in model space (measured correlation 0.63; ICBM 2009c: 0.66)."""
    spec = with_template(PreprocessingSpec(), "sri24")
    sri24 = sitk.GetArrayFromImage(resample_to_model(load_template("sri24").t1_brain, sitk.Transform(), spec.grid))
    case = preprocess_file(real_data("colin27_t1_brain"), spec=spec)
    image, mask = check_model_space_image(case)
    assert case.info["mask_source"] == MASK_SKULL_STRIPPED_INPUT and case.spec.template == "sri24"
    assert correlation(image, sri24, mask) > TEMPLATE_CORRELATION_FLOOR


def test_given_brain_mask_is_used(real_data):
    """Colin27 (skull on) with its own brain mask (from the skull-stripped copy)."""
    brain = sitk.Cast(sitk.ReadImage(str(real_data("colin27_t1_brain"))) > 0, sitk.sitkUInt8)
    image = sitk.ReadImage(str(real_data("colin27_t1")))
    case = preprocess_image(image, brain)
    assert case.info["mask_source"] == "given"
    _, mask, _ = case.arrays()
    expected = sitk.GetArrayFromImage(resample_to_model(brain, case.transform, ModelGrid(), binary=True)) > 0
    np.testing.assert_array_equal(mask, expected)


def test_template_mask_is_cut_to_the_scanned_field_of_view(real_data):
    """MRHead (skull on, template mask) with the top 70 mm of its field of view (about 45 mm of the head) not scanned, on the whole-brain grid: the
    brain mask holds only scanned voxels, although the template brain reaches above the cut."""
    head = sitk.ReadImage(str(real_data("mrhead")), sitk.sitkFloat32)
    direction = np.array(head.GetDirection()).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[2])))  # the index axis that runs along z (superior)
    start, size = [0, 0, 0], list(head.GetSize())
    size[axis] -= int(round(70.0 / head.GetSpacing()[axis]))
    if direction[2, axis] < 0:  # index 0 is the top: keep the far end
        start[axis] = head.GetSize()[axis] - size[axis]
    slab = sitk.RegionOfInterest(head, size, start)
    spec = PreprocessingSpec(grid=WHOLE_BRAIN_GRID)

    case = preprocess_image(slab, spec=spec)

    _, mask, _ = case.arrays()
    scanned = sitk.GetArrayFromImage(field_of_view(slab, case.transform, spec.grid)) > 0
    template_brain = sitk.GetArrayFromImage(
        resample_to_model(load_template().mask, sitk.Transform(), spec.grid, binary=True)) > 0
    assert case.info["mask_source"] == MASK_TEMPLATE
    assert (template_brain & ~scanned).sum() > 2000  # ≥ 16 ml of the template brain was not scanned
    assert mask.any() and not (mask & ~scanned).any()
    assert (mask == (template_brain & scanned)).all()
    assert not mask[-3:].any() and mask[:-10].any()  # the top slices of the grid: above the cut
