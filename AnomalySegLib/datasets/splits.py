"""Splits of a prepared dataset: seeded k-fold splits per dataset, or the paper's published lists.

Seeded splits (:func:`make_splits`) cross-validate each dataset on its own; the paper instead trains
Stage I on 5 IXI folds and tests on fixed BraTS21 / ATLAS v2 test sets (:func:`make_paper_splits`, from
the authors' lists), so only the latter gives a ± comparable with the paper's Table 1.

Seeded splits: the paper's weakly supervised models use ~10 % of BraTS21 (or ATLAS v2) with labels
(90 training + 10 validation volumes). For fold k the cases of chunk k are the
test set; the rest are shuffled (seeded) into validation (threshold calibration, 10 %) and training;
``labelled_train`` / ``labelled_val`` are the labelled subset drawn from the training cases
(``labelled_fraction`` of all cases, of which 10 % validate). The same seed and case list give the same
splits on every machine (NumPy's PCG64 generator).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from AnomalySegLib.errors import InputError

DEFAULT_FOLDS = 5
DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_LABELLED_FRACTION = 0.1


def make_splits(
    case_ids: Sequence[str],
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    labelled_fraction: float = DEFAULT_LABELLED_FRACTION,
) -> dict:
    """The split document written as ``splits.json``.

    Returns:
        ``{"seed", "folds": [{"fold", "train", "val", "test", "labelled_train", "labelled_val"}, ...], ...}``
        with sorted id lists; every case is in exactly one test set, and in each fold train, val and test
        are disjoint and cover all cases; ``labelled_*`` ⊂ train.

    Raises:
        InputError: fewer cases than folds, or duplicate ids.
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        raise InputError(None, "duplicate case ids: cannot split")
    if folds < 1 or len(ids) < folds:
        raise InputError(None, f"{len(ids)} cases cannot make {folds} folds")
    rng = np.random.default_rng(seed)
    shuffled = [ids[i] for i in rng.permutation(len(ids))]
    chunks = [list(chunk) for chunk in np.array_split(np.array(shuffled, dtype=object), folds)]
    result = []
    for index, test in enumerate(chunks):
        rest = [case for chunk_index, chunk in enumerate(chunks) if chunk_index != index for case in chunk]
        rest = [rest[i] for i in rng.permutation(len(rest))]
        validation_count = int(round(validation_fraction * len(rest))) if len(rest) > 1 else 0
        val, train = rest[:validation_count], rest[validation_count:]
        labelled_count = min(len(train), max(1, int(round(labelled_fraction * len(ids))))) if train else 0
        labelled = train[:labelled_count]
        labelled_val_count = int(round(0.1 * labelled_count))
        result.append({
            "fold": index,
            "train": sorted(train),
            "val": sorted(val),
            "test": sorted(test),
            "labelled_train": sorted(labelled[labelled_val_count:]),
            "labelled_val": sorted(labelled[:labelled_val_count]),
        })
    return {
        "seed": seed,
        "folds": result,
        "validation_fraction": validation_fraction,
        "labelled_fraction": labelled_fraction,
        "cases": ids,
    }


# The authors' published split lists (ids only), read from FinnBehrendt/Supervised-Anomaly-Detection-with-
# Diffusion-Models, splits/*.csv; the file names its commit. Stage I is trained on IXI folds; BraTS21 and
# ATLAS v2 have one fixed test set and one validation list whose first 10 cases validate and the
# rest train Stage II (weak supervision), as their Datamodules_train.py does.
PAPER_SPLITS_FILE = Path(__file__).with_name("paper_splits.json")
PAPER_DATASETS = ("ixi", "brats21", "atlas2")
PAPER_LABELLED_VALIDATION = 10  # csv['train'][0:10] validates, [10:] trains, in the authors' datamodules


def paper_split_lists() -> dict:
    """The authors' lists: ``{"ixi": {"test", "folds": [{"train", "val"}] * 5}, "brats21"|"atlas2":
    {"test", "val"}, "source": ...}``."""
    return json.loads(PAPER_SPLITS_FILE.read_text(encoding="utf-8"))


def make_paper_splits(dataset: str, case_ids: Sequence[str]) -> dict:
    """The paper's splits of ``dataset`` over the prepared ``case_ids``, in :func:`make_splits`' schema.

    IXI: fold k = the authors' ``IXI_train_fold{k}`` / ``IXI_val_fold{k}`` lists and the fixed
    ``IXI_test`` (Stage I trains on train, selects on val; the DRAEM test set is made from test).
    BraTS21 / ATLAS v2: the same five folds (Stage I folds come from IXI): ``test`` is the fixed test
    list, ``val`` the validation list, of which the first 10 are ``labelled_val`` and the others
    ``labelled_train`` (the weakly supervised Stage II). Listed cases that were not prepared are
    reported under ``"missing"``; prepared cases in no list under ``"unlisted"``.

    The published lists are kept as they are, with two facts reported rather than changed: duplicate
    rows (dropped when the lists were read) and IXI subjects that are in a training fold and in the test
    list at once (``"train_test_overlap"`` per fold).

    Raises:
        InputError: ``dataset`` has no published paper split.
    """
    if dataset not in PAPER_DATASETS:
        raise InputError(None, f"the paper publishes splits for {', '.join(PAPER_DATASETS)} only, not {dataset!r}")
    lists = paper_split_lists()
    available = set(case_ids)

    def present(ids: Sequence[str]) -> list[str]:
        return sorted(case for case in ids if case in available)

    entry = lists[dataset]
    folds = []
    if dataset == "ixi":
        listed = set(entry["test"]).union(*(set(f["train"]) | set(f["val"]) for f in entry["folds"]))
        for index, fold in enumerate(entry["folds"]):
            folds.append({
                "fold": index, "train": present(fold["train"]), "val": present(fold["val"]),
                "test": present(entry["test"]), "labelled_train": [], "labelled_val": [],
                "train_test_overlap": present(set(fold["train"]) & set(entry["test"])),
            })
    else:
        listed = set(entry["test"]) | set(entry["val"])
        validation = entry["val"]
        for index in range(DEFAULT_FOLDS):
            folds.append({
                "fold": index, "train": [], "val": present(validation), "test": present(entry["test"]),
                "labelled_train": present(validation[PAPER_LABELLED_VALIDATION:]),
                "labelled_val": present(validation[:PAPER_LABELLED_VALIDATION]),
            })
    return {
        "protocol": "paper",
        "source": lists["source"],
        "folds": folds,
        "cases": sorted(available),
        "missing": sorted(listed - available),
        "unlisted": sorted(available - listed),
    }
