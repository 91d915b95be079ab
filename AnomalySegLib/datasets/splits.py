"""Seeded k-fold splits with small labelled subsets, as in the paper's protocol.

The paper reports mean ± std over 5 folds; its weakly supervised models use ~10 % of BraTS21 (or
ATLAS v2) with labels (90 training + 10 validation volumes). For fold k the cases of chunk k are the
test set; the rest are shuffled (seeded) into validation (threshold calibration, 10 %) and training;
``labelled_train`` / ``labelled_val`` are the labelled subset drawn from the training cases
(``labelled_fraction`` of all cases, of which 10 % validate). The same seed and case list give the same
splits on every machine (NumPy's PCG64 generator).
"""

from __future__ import annotations

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
