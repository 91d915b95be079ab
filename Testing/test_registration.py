"""Affine registration recovers a known random affine of the template (docs/design.md, "Preprocessing")."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.preprocessing.pipeline import MASK_TEMPLATE, preprocess_image
from AnomalySegLib.preprocessing.template import load_template


def random_affine(rng: np.random.Generator, centre: np.ndarray) -> sitk.AffineTransform:
    """Rotations up to ±15° about each axis, scales 0.85–1.15 per axis, shifts up to ±20 mm."""
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(*np.radians(rng.uniform(-15, 15, 3)))
    matrix = np.array(rotation.GetMatrix()).reshape(3, 3) @ np.diag(rng.uniform(0.85, 1.15, 3))
    transform = sitk.AffineTransform(3)
    transform.SetCenter(centre.tolist())
    transform.SetMatrix(matrix.ravel().tolist())
    transform.SetTranslation(rng.uniform(-20, 20, 3).tolist())
    return transform


@pytest.fixture(scope="module")
def brain_points() -> np.ndarray:
    """Physical positions (mm) of every 20th template brain voxel, ``[N, 3]``."""
    mask = load_template().mask
    indices = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[::20, ::-1]
    return np.array([mask.TransformIndexToPhysicalPoint([int(i) for i in index]) for index in indices])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 4])
def test_known_affine_of_the_skull_on_template_is_recovered(seed, brain_points):
    """The skull-on template, moved by a random affine and resampled on a 1.1 × 1.1 × 1.2 mm grid,
    goes through the whole pipeline (N4, brain-mask decision, registration); its transform must map
    brain points where the true one does: mean error < 2 mm."""
    template = load_template()
    truth = random_affine(np.random.default_rng(seed), brain_points.mean(axis=0))
    grid = sitk.Image([180, 200, 170], sitk.sitkFloat32)
    grid.SetSpacing([1.1, 1.1, 1.2])
    grid.SetOrigin([-99.0, -120.0, -90.0])
    moved = sitk.Resample(template.t1, grid, truth.GetInverse(), sitk.sitkLinear, 0.0)

    case = preprocess_image(moved)

    assert case.info["mask_source"] == MASK_TEMPLATE
    found = np.array([case.transform.TransformPoint(p) for p in brain_points])
    expected = np.array([truth.TransformPoint(p) for p in brain_points])
    error_mm = np.linalg.norm(found - expected, axis=1)
    assert error_mm.mean() < 2.0, f"seed {seed}: mean error {error_mm.mean():.2f} mm"
    assert np.percentile(error_mm, 95) < 3.0
