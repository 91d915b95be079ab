"""Affine registration recovers a known random affine of the template (docs/design.md, "Preprocessing")."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.preprocessing.pipeline import MASK_SKULL_STRIPPED_INPUT, MASK_TEMPLATE, preprocess_image
from AnomalySegLib.preprocessing.registration import mask_points, point_errors_mm, random_affine, reduce
from AnomalySegLib.preprocessing.spec import PreprocessingSpec, with_template
from AnomalySegLib.preprocessing.template import load_template

# Recovery error on the template moved by a known affine. Measured (mean over brain points): 0.05–0.15 mm
# on ICBM 2009c skull-on, 0.15–0.22 mm on SRI24; a registration a level off (e.g. the similarity stage
# alone) misses by millimetres.
MEAN_ERROR_MM = 0.5
P95_ERROR_MM = 1.0


def moved_template(image: sitk.Image, truth: sitk.Transform, centre: np.ndarray) -> sitk.Image:
    """``image`` moved by ``truth`` and resampled on a 1.1 × 1.1 × 1.2 mm grid around ``centre``."""
    grid = sitk.Image([180, 200, 170], sitk.sitkFloat32)
    grid.SetSpacing([1.1, 1.1, 1.2])
    grid.SetOrigin((centre - np.array([99.0, 110.0, 100.0])).tolist())
    return sitk.Resample(image, grid, truth.GetInverse(), sitk.sitkLinear, 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("template_name, image, mask_source, seed", [
    ("icbm2009c", "t1", MASK_TEMPLATE, 0),
    ("icbm2009c", "t1", MASK_TEMPLATE, 1),
    ("icbm2009c", "t1", MASK_TEMPLATE, 4),
    ("sri24", "t1_brain", MASK_SKULL_STRIPPED_INPUT, 0),
    ("sri24", "t1_brain", MASK_SKULL_STRIPPED_INPUT, 1),
])
def test_known_affine_of_the_template_is_recovered(template_name, image, mask_source, seed):
    """The template (skull-on ICBM: the brain mask comes through the registration; skull-stripped SRI24:
    from the input), moved by a random affine, goes through the whole pipeline with that template
    (N4, brain-mask decision, registration); its transform must map brain points where the true one does."""
    template = load_template(template_name)
    points = mask_points(template.mask)
    truth = random_affine(np.random.default_rng(seed), points.mean(axis=0))
    moved = moved_template(getattr(template, image), truth, points.mean(axis=0))

    case = preprocess_image(moved, spec=with_template(PreprocessingSpec(), template_name))

    assert case.info["mask_source"] == mask_source
    error_mm = point_errors_mm(case.transform, truth, points)
    assert error_mm.mean() < MEAN_ERROR_MM, f"{template_name} seed {seed}: mean error {error_mm.mean():.2f} mm"
    assert np.percentile(error_mm, 95) < P95_ERROR_MM


def test_pyramid_level_keeps_the_extent_and_the_mean():
    """A registration level: block average ×4 then smoothing; same physical extent, same mean, smoother."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(100.0, 10.0, (40, 48, 56)).astype(np.float32))
    image.SetSpacing([1.0, 1.0, 1.0])
    image.SetOrigin([-20.0, 5.0, 3.0])

    level = reduce(image, 4, 2.0)

    assert level.GetSize() == (14, 12, 10) and level.GetSpacing() == (4.0, 4.0, 4.0)
    # the first block's centre is the mean of its 1 mm voxel centres
    assert level.GetOrigin() == pytest.approx((-18.5, 6.5, 4.5))
    values = sitk.GetArrayFromImage(level)
    assert values.mean() == pytest.approx(100.0, abs=0.5)
    assert values.std() < 10.0 / 8 * 1.2  # an 8-voxel average alone divides the noise by 8
