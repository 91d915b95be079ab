"""Where the files of the paper's public datasets are, in the layout each is published in.

Each :class:`DatasetLayout` finds the T1 images under a dataset's root folder (a regular expression on
the path relative to the root, whose ``case`` group is the case id) and, for labelled datasets, the
label map next to each image. The datasets are not shipped (licences); users download them and point
``anomalyseg prepare-dataset`` at the unpacked folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from AnomalySegLib.errors import InputError


@dataclass(frozen=True)
class DatasetFiles:
    """One case of a dataset: its id, T1 image and (labelled datasets) anomaly label map."""

    case_id: str
    image: Path
    labels: Path | None


@dataclass(frozen=True)
class DatasetLayout:
    """How one dataset is laid out.

    Attributes:
        name: the name ``prepare-dataset`` takes.
        description: what the dataset is, where it comes from.
        image_pattern: regex matched (``fullmatch``) against each file's path relative to the root,
            POSIX separators; group ``case`` is the case id.
        labels_template: the label file's path relative to the image's folder, ``{case}`` replaced by
            the case id; ``None`` for healthy datasets.
        label_values: label values that are the anomaly (``None``: every value > 0).
        healthy: a dataset of healthy subjects (Stage I training, FPR).
    """

    name: str
    description: str
    image_pattern: str
    labels_template: str | None
    label_values: tuple[int, ...] | None
    healthy: bool

    def discover(self, root: str | Path) -> list[DatasetFiles]:
        """Every case under ``root``, sorted by id.

        Raises:
            InputError: ``root`` is not a folder, holds no matching image, a label file is missing, or
                two images claim the same case id.
        """
        root = Path(root)
        if not root.is_dir():
            raise InputError(root, f"is not a folder (expected the unpacked {self.name} dataset)")
        pattern = re.compile(self.image_pattern)
        found: dict[str, DatasetFiles] = {}
        for path in sorted(root.rglob("*.nii*")):
            match = pattern.fullmatch(path.relative_to(root).as_posix())
            if match is None:
                continue
            case_id = match.group("case").replace("/", "_")  # WMH ids are site/number
            labels = None
            if self.labels_template is not None:
                labels = Path(os.path.normpath(path.parent / self.labels_template.format(case=match.group("case"))))
                if not labels.is_file():
                    raise InputError(labels, f"missing: the {self.name} label map of case {case_id} ({path.name})")
            if case_id in found:
                raise InputError(path, f"case id {case_id} appears twice (also {found[case_id].image})")
            found[case_id] = DatasetFiles(case_id, path, labels)
        if not found:
            raise InputError(root, f"holds no {self.name} T1 image in the published layout ({self.description})")
        return [found[key] for key in sorted(found)]


LAYOUTS: dict[str, DatasetLayout] = {
    layout.name: layout
    for layout in (
        DatasetLayout(
            "ixi", "IXI healthy T1 (brain-development.org/ixi-dataset): IXI-T1/IXI002-Guys-0828-T1.nii.gz",
            r"(?:.*/)?(?P<case>IXI\d{3}-[A-Za-z]+-\d+)-T1\.nii(?:\.gz)?", None, None, True,
        ),
        DatasetLayout(
            "ixi-t2", "IXI healthy T2: IXI-T2/IXI002-Guys-0828-T2.nii.gz",
            r"(?:.*/)?(?P<case>IXI\d{3}-[A-Za-z]+-\d+)-T2\.nii(?:\.gz)?", None, None, True,
        ),
        DatasetLayout(
            "brats21", "BraTS 2021 training data: BraTS2021_00000/BraTS2021_00000_t1.nii.gz + _seg.nii.gz "
            "(whole tumour = labels 1, 2, 4)",
            r"(?:.*/)?(?P<case>BraTS2021_\d{5})/(?P=case)_t1\.nii(?:\.gz)?", "{case}_seg.nii.gz", (1, 2, 4), False,
        ),
        DatasetLayout(
            "atlas2", "ATLAS v2.0 training data: R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-"
            "MNI152NLin2009aSym_T1w.nii.gz + ..._label-L_desc-T1lesion_mask.nii.gz",
            r"(?:.*/)?(?P<case>sub-r\d{3}s\d{3})/ses-1/anat/"
            r"(?P=case)_ses-1_space-MNI152NLin2009aSym_T1w\.nii(?:\.gz)?",
            "{case}_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz", None, False,
        ),
        DatasetLayout(
            "mslub", "MSLUB (Lesjak et al. 2018, Ljubljana MS database): patient01/raw/patient01_T1W.nii.gz "
            "+ patient01_consensus_gt.nii.gz",
            r"(?:.*/)?(?P<case>patient\d{2})/raw/(?P=case)_T1W\.nii(?:\.gz)?", "{case}_consensus_gt.nii.gz", None,
            False,
        ),
        DatasetLayout(
            "wmh", "MICCAI 2017 WMH challenge: training/Utrecht/0/pre/T1.nii.gz + training/Utrecht/0/wmh.nii.gz "
            "(test sets as test/Amsterdam/GE3T/100/...; WMH = label 1, 2 = other pathology)",
            r"(?:.*?/)?(?P<case>(?:Amsterdam/)?[A-Za-z0-9_]+/\d+)/pre/T1\.nii(?:\.gz)?",
            "../wmh.nii.gz", (1,), False,
        ),
    )
}


def get_layout(name: str) -> DatasetLayout:
    """The layout called ``name`` (case-insensitive). Raises InputError for an unknown name."""
    try:
        return LAYOUTS[name.lower()]
    except KeyError:
        raise InputError(None, f"unknown dataset {name!r} (known: {', '.join(LAYOUTS)})") from None
