"""What was scored: the model grid's box on the input's grid, and the fraction of the brain inside it.

A model grid is a box of template space (:data:`~AnomalySegLib.preprocessing.spec.MODEL_GRIDS`): the default
model's whole-brain grid reaches from the bottom of the cerebellum to the vertex, the paper's crop is 100 mm
tall and misses both. A reader must not take "no finding" for "nothing there" where nothing was scored, so
``segment`` reports the fraction of the brain inside the box and the QC picture outlines it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.preprocessing.restore import restore_to_native
from AnomalySegLib.preprocessing.spec import ModelGrid, PreprocessingSpec
from AnomalySegLib.preprocessing.template import load_template


def scored_box_on_native(image: sitk.Image, transform: sitk.Transform, grid: ModelGrid) -> sitk.Image:
    """uint8 0/1 on ``image``'s grid: 1 where the point maps inside the model grid (``transform``: the
    preprocessing transform, template → native points)."""
    return restore_to_native(np.ones(grid.array_shape, dtype=np.float32), image, transform, "binary", grid)


def native_brain_estimate(image: sitk.Image, transform: sitk.Transform, spec: PreprocessingSpec) -> sitk.Image:
    """uint8 0/1 on ``image``'s grid: the template's whole brain mask (vertex to cerebellum) mapped through
    the registration: an estimate of the input's brain that, unlike the model-space mask, is not cut
    by the model grid."""
    template_mask = load_template(spec.template).mask
    return sitk.Resample(template_mask, image, transform.GetInverse(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def scored_brain_fraction(image: sitk.Image, transform: sitk.Transform, scored_box: sitk.Image,
                          spec: PreprocessingSpec) -> float:
    """Fraction (0–1) of the input's brain (:func:`native_brain_estimate`, within the input's field of
    view) that lies inside ``scored_box`` (:func:`scored_box_on_native`); 0 when no brain is in view."""
    brain = sitk.GetArrayViewFromImage(native_brain_estimate(image, transform, spec)) > 0
    box = sitk.GetArrayViewFromImage(scored_box) > 0
    total = int(np.count_nonzero(brain))
    return float(np.count_nonzero(brain & box)) / total if total else 0.0
