"""The registration template (atlas) that defines model space, read from ``Resources/Templates/``.

A template folder holds a skull-on T1 (``t1.nii.gz``), a skull-stripped T1 (``t1_brain.nii.gz``) and a
brain mask (``mask.nii.gz``) on one 1 mm grid; ``scripts/make_template.py`` makes the committed
MNI ICBM152 2009c copy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import SimpleITK as sitk

from AnomalySegLib.errors import InputError
from AnomalySegLib.resources import resources_dir

T1_FILE = "t1.nii.gz"
T1_BRAIN_FILE = "t1_brain.nii.gz"
MASK_FILE = "mask.nii.gz"


@dataclass(frozen=True)
class Template:
    """One atlas: ``t1`` and ``t1_brain`` float32, ``mask`` uint8 (0/1), all on the same grid."""

    name: str
    t1: sitk.Image
    t1_brain: sitk.Image
    mask: sitk.Image


@functools.lru_cache(maxsize=4)
def load_template(name: str = "icbm2009c") -> Template:
    """The template ``name`` from ``Resources/Templates/<name>/`` (read once per process).

    Raises:
        InputError: the folder or one of its files is missing or unreadable.
    """
    folder = resources_dir() / "Templates" / name
    if not folder.is_dir():
        raise InputError(folder, f"template {name!r} not found")
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
