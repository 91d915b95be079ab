"""Learned brain extraction of skull-on T1 scans (optional): deepbet (Fisch et al. 2024, MIT licence).

deepbet ships two TorchScript networks inside its PyPI wheel (a coarse one that finds the brain's
bounding box at 128³, and the segmentation network at 256³ inside that box); they run offline, on the
CPU in ~10–60 s. We call deepbet's own :class:`deepbet.BrainExtraction` (its model loading, input
normalisation and post-processing: largest component, holes filled) rather than re-implementing it,
and only convert between SimpleITK images and the RAS voxel arrays it expects.

Install with ``pip install 'anomalyseg[brain]'``; the engine never needs it at import time, and the
preprocessing uses it only when ``spec.brain_mask.method == "learned"`` (``prepare-dataset
--brain-extraction learned``, or a model whose spec says so).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.errors import InputError

INSTALL_HINT = "pip install 'anomalyseg[brain]' (or: pip install deepbet==1.0.2)"
DEEPBET_THRESHOLD = 0.5  # deepbet's default probability threshold


def learned_extraction_available() -> bool:
    """Whether deepbet is installed."""
    return importlib.util.find_spec("deepbet") is not None


_EXTRACTOR = None


def _extractor():
    """deepbet's extractor, loaded once per process (its two TorchScript files, ~17 MB)."""
    global _EXTRACTOR
    if _EXTRACTOR is None:
        if not learned_extraction_available():
            raise InputError(None, f"learned brain extraction needs deepbet: {INSTALL_HINT}")
        from deepbet import BrainExtraction  # optional dependency, imported on first use only

        import torch

        _EXTRACTOR = BrainExtraction(no_gpu=not torch.cuda.is_available())
    return _EXTRACTOR


def learned_brain_mask(image: sitk.Image) -> sitk.Image:
    """The brain of a skull-on T1 ``image`` (uint8 0/1 on ``image``'s grid) by deepbet.

    Args:
        image: a 3D scalar T1 image, any orientation (deepbet sees it in RAS voxel order, as it would
            read it with nibabel's ``as_closest_canonical``).

    Raises:
        InputError: deepbet is not installed, or it finds no brain.
    """
    extractor = _extractor()
    ras = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "RAS")
    # SimpleITK arrays are [k, j, i]; deepbet expects [i, j, k] with i → R, j → A, k → S.
    voxels = np.ascontiguousarray(sitk.GetArrayFromImage(ras).transpose(2, 1, 0))
    try:
        probability = extractor.run_model(voxels.copy())
    except AssertionError as error:  # deepbet asserts when it finds no foreground
        raise InputError(None, f"learned brain extraction found no brain ({error})") from error
    brain = extractor.postprocess(probability > DEEPBET_THRESHOLD)
    if not brain.any():
        raise InputError(None, "learned brain extraction found no brain")
    mask = sitk.GetImageFromArray(np.ascontiguousarray(brain.transpose(2, 1, 0)).astype(np.uint8))
    mask.CopyInformation(ras)
    return sitk.DICOMOrient(mask, sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        image.GetDirection()))
