"""The DRAEM-synthetic IXI test set of the paper's Table 1 (third column), made reproducibly.

Each healthy test case (a preprocessed case folder, e.g. ``OUT/folds/fold0/test/<case>`` of
``prepare-dataset ixi --splits paper``) gets DRAEM anomalies (:class:`~AnomalySegLib.anomalies.draem.
DraemAnomalyGenerator`, the paper's parameters) in every axial slice that holds brain, and becomes a
labelled case folder: ``image.nii.gz`` with the anomalies, ``labels.nii.gz`` where they are, the same
mask, transform and geometry. The draws of a case depend only on ``seed`` and the case id (a hash of
both), so the set is the same on every machine, in any order and for any subset of cases.

Anomalies are kept inside the brain mask: the score maps are zero outside it, so labels there could not
be found by any model (the authors' evaluation code does not say how its DRAEM test volumes were made;
docs/evaluation.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from AnomalySegLib.anomalies.draem import DraemAnomalyGenerator
from AnomalySegLib.choices import DRAEM_TEST_SET_SEED
from AnomalySegLib.errors import OutputExistsError
from AnomalySegLib.preprocessing.case_folder import (
    IMAGE_FILE,
    INFO_FILE,
    LABELS_FILE,
    MASK_FILE,
    list_cases,
    load_case,
)

DEFAULT_SEED = DRAEM_TEST_SET_SEED


def case_generator(seed: int, case_id: str) -> torch.Generator:
    """The generator of one case's draws, seeded by a hash of ``seed`` and the case id (stable across
    runs). The hash has 32 bits: torch's CPU generator (MT19937) uses only the low 32 bits of a seed."""
    digest = hashlib.sha256(f"{seed}/{case_id}".encode("utf-8")).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:4], "little"))


def draem_volume(image: np.ndarray, mask: np.ndarray, generator: torch.Generator,
                 anomalies: DraemAnomalyGenerator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM anomalies in every brain-holding axial slice of ``image`` ``[Z, Y, X]`` (float in [0, 1]).

    Returns:
        ``(image, labels)``: the anomalous volume (float32, 0 outside ``mask``) and the bool labels.
    """
    anomalies = anomalies or DraemAnomalyGenerator(within_brain=True)
    slices = torch.from_numpy(np.asarray(image, np.float32))[:, None]
    brain = torch.from_numpy(np.asarray(mask, bool))[:, None]
    result = anomalies(slices, brain, generator)
    has_brain = brain.flatten(1).any(1).view(-1, 1, 1, 1)
    labels = (result.masks > 0) & brain & has_brain
    images = torch.where(has_brain, result.images, slices) * brain
    return images[:, 0].numpy().astype(np.float32), labels[:, 0].numpy()


def make_draem_test_set(source: str | Path, out: str | Path, *, seed: int = DEFAULT_SEED,
                        case_ids: Sequence[str] | None = None, overwrite: bool = False) -> list[Path]:
    """Write the DRAEM test case of every case folder under ``source`` (or of ``case_ids``) into ``out``.

    Raises:
        InputError: ``source`` holds no case folder. OutputExistsError: a case folder exists in
        ``out`` and ``overwrite`` is false (checked before anything is written).
    """
    out = Path(out)
    folders = [f for f in list_cases(source) if case_ids is None or f.name in set(case_ids)]
    if not overwrite:
        for folder in folders:
            if (out / folder.name).exists():
                raise OutputExistsError(out / folder.name)
    written = []
    for folder in folders:
        case = load_case(folder)
        image, labels = draem_volume(case.image, case.mask, case_generator(seed, case.case_id))
        written.append(_write_case(folder.resolve(), out / case.case_id, image, labels, seed, overwrite))
    return written


def _write_case(source: Path, target: Path, image: np.ndarray, labels: np.ndarray, seed: int,
                overwrite: bool) -> Path:
    """Copy the case folder ``source`` to ``target`` with the new image and labels, all or nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for name in (MASK_FILE, INFO_FILE, "transform.tfm"):
            if (source / name).is_file():
                shutil.copyfile(source / name, temp / name)
        reference = sitk.ReadImage(str(source / IMAGE_FILE))
        for name, array, pixel in ((IMAGE_FILE, image, sitk.sitkFloat32), (LABELS_FILE, labels, sitk.sitkUInt8)):
            volume = sitk.Cast(sitk.GetImageFromArray(array.astype(np.float32)), pixel)
            volume.CopyInformation(reference)
            sitk.WriteImage(volume, str(temp / name), True)
        info_path = temp / INFO_FILE
        document = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        document.setdefault("info", {})["synthetic_anomalies"] = {
            "kind": "draem", "seed": seed, "source_case": source.name, "anomaly_voxels": int(labels.sum()),
        }
        info_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            if not overwrite:
                raise OutputExistsError(target)
            shutil.rmtree(target)
        temp.rename(target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target
