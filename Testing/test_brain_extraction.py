"""Learned brain extraction (deepbet, optional extra ``[brain]``) on a real skull-on scan."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.metrics import dice
from AnomalySegLib.preprocessing.pipeline import MASK_LEARNED, MASK_TEMPLATE, preprocess_file
from AnomalySegLib.preprocessing.spec import PreprocessingSpec, SpecError, with_brain_mask_method


def test_brain_mask_method_is_a_validated_spec_option():
    spec = with_brain_mask_method(PreprocessingSpec(), "learned")
    assert spec.brain_mask.method == "learned" and PreprocessingSpec().brain_mask.method == "template"
    assert PreprocessingSpec.from_dict(spec.to_dict()) == spec
    old = PreprocessingSpec().to_dict()
    del old["brain_mask"]["method"]  # bundles written before the option keep the template mask
    assert PreprocessingSpec.from_dict(old).brain_mask.method == "template"
    with pytest.raises(SpecError, match="brain_mask.method"):
        with_brain_mask_method(PreprocessingSpec(), "hd-bet")


@pytest.mark.slow
def test_learned_mask_of_a_skull_on_scan(real_data):
    """deepbet on the ITK example T1 (skull on): a brain-sized mask, inside the head, on the scan's grid,
    agreeing with the template mask mapped by the registration, and used by the pipeline."""
    pytest.importorskip("deepbet")
    from AnomalySegLib.preprocessing.brain_extraction import learned_brain_mask

    path = real_data("itk_kmeans_t1")
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    mask = learned_brain_mask(image)
    assert mask.GetSize() == image.GetSize() and mask.GetDirection() == image.GetDirection()
    voxels = sitk.GetArrayFromImage(mask) > 0
    brain_ml = voxels.sum() * np.prod(image.GetSpacing()) / 1000
    assert 900 < brain_ml < 2000
    values = sitk.GetArrayFromImage(image)
    assert np.median(values[voxels]) > 2 * np.median(values[~voxels])  # brain, not background

    learned = preprocess_file(path, spec=with_brain_mask_method(PreprocessingSpec(), "learned"))
    template = preprocess_file(path)
    assert learned.info["mask_source"] == MASK_LEARNED and template.info["mask_source"] == MASK_TEMPLATE
    learned_mask, template_mask = learned.arrays()[1], template.arrays()[1]
    assert 0.8 < dice(learned_mask, template_mask) < 1.0
