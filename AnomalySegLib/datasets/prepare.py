"""``prepare-dataset``: preprocess a public dataset into case folders and write its splits.

``OUT/cases/<case_id>/`` are ordinary preprocessed case folders (see ``case_folder.py``; labelled
datasets get ``labels.nii.gz``), ``OUT/splits.json`` the seeded folds (see ``splits.py``) and
``OUT/dataset.json`` what was prepared from where. Case folders that exist already are kept (a re-run
resumes), and their ids are included in the splits. With ``splits="paper"`` the splits are the authors'
published lists (:func:`~.splits.make_paper_splits`) and ``OUT/folds/fold<k>/<subset>/`` hold links to
the case folders of each subset (``train``, ``val``, ``test``, ``labelled_train``, ``labelled_val``), so
that ``train-recon --data``, ``evaluate --data`` ... take a fold's subset directly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from AnomalySegLib.batch import BatchReport, run_batch
from AnomalySegLib.choices import SPLIT_KINDS
from AnomalySegLib.datasets.layouts import DatasetFiles, get_layout
from AnomalySegLib.datasets.splits import make_paper_splits, make_splits
from AnomalySegLib.errors import InputError
from AnomalySegLib.io.atomic import atomic_write_text
from AnomalySegLib.preprocessing.case_folder import IMAGE_FILE, write_case
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.preprocessing.spec import PreprocessingSpec

LOG = logging.getLogger(__name__)
CASES_DIR = "cases"
SPLITS_FILE = "splits.json"
DATASET_FILE = "dataset.json"
FOLDS_DIR = "folds"
SUBSETS = ("train", "val", "test", "labelled_train", "labelled_val")


@dataclass
class PreparedDataset:
    """Where the prepared dataset is and how the batch went."""

    root: Path
    prepared: list[str]
    skipped: list[str]
    report: BatchReport


def prepare_dataset(
    name: str,
    source: str | Path,
    out: str | Path,
    *,
    folds: int = 5,
    seed: int = 0,
    labelled_fraction: float = 0.1,
    limit: int | None = None,
    spec: PreprocessingSpec | None = None,
    overwrite: bool = False,
    splits: str = "seeded",
) -> PreparedDataset:
    """Discover the dataset ``name`` under ``source``, preprocess every case, write splits.

    Args:
        limit: only the first ``limit`` cases (by id), e.g. to try the protocol on a few.
        overwrite: re-preprocess cases whose folders exist (default: keep them) and replace different
            ``splits.json`` / ``dataset.json`` files.
        splits: ``"seeded"`` (:func:`~.splits.make_splits`) or ``"paper"`` (the authors' lists; IXI,
            BraTS21 and ATLAS v2 only; ``folds``, ``seed`` and ``labelled_fraction`` are then unused).

    Raises:
        InputError: unknown dataset, nothing found, or too few prepared cases for the folds.
        OutputExistsError: ``splits.json`` or ``dataset.json`` exists with other content (e.g. another
            seed) and ``overwrite`` is false.
    """
    layout = get_layout(name)
    if splits not in SPLIT_KINDS:
        raise InputError(None, f"splits must be one of {SPLIT_KINDS}, not {splits!r}")
    if splits == "paper":
        make_paper_splits(layout.name, [])  # refuse a dataset without published lists before any work
    spec = spec or PreprocessingSpec()
    out = Path(out)
    files = layout.discover(source)[:limit]
    cases_root = out / CASES_DIR
    skipped = [f.case_id for f in files if (cases_root / f.case_id / IMAGE_FILE).is_file() and not overwrite]
    todo = [f for f in files if f.case_id not in skipped]

    def process(case: DatasetFiles) -> None:
        result = preprocess_file(case.image, labels_path=case.labels, label_values=layout.label_values, spec=spec)
        write_case(result, cases_root / case.case_id, overwrite=overwrite)

    for case_id in skipped:
        LOG.info("%s: already prepared, kept", cases_root / case_id)
    report = run_batch(todo, process)
    failed = {outcome.case_id for outcome in report.failed}
    ready = [f.case_id for f in files if f.case_id not in failed]
    if splits == "paper":
        document_splits = make_paper_splits(layout.name, ready)
        if document_splits["missing"]:
            LOG.warning("%d cases of the paper's %s lists are not in %s (see 'missing' in %s)",
                        len(document_splits["missing"]), layout.name, source, SPLITS_FILE)
    else:
        document_splits = make_splits(ready, folds=folds, seed=seed, labelled_fraction=labelled_fraction)
    document_splits["dataset"] = layout.name
    _write_unless_different(out / SPLITS_FILE, json.dumps(document_splits, indent=2) + "\n", overwrite)
    if splits == "paper":
        write_split_folders(out, document_splits)
    document = {
        "dataset": layout.name,
        "description": layout.description,
        "healthy": layout.healthy,
        "label_values": None if layout.label_values is None else list(layout.label_values),
        "source": str(Path(source).resolve()),
        "cases": {f.case_id: {"image": str(f.image), "labels": None if f.labels is None else str(f.labels)}
                  for f in files if f.case_id in ready},
        "failed": sorted(failed),
        "spec": spec.to_dict(),
    }
    _write_unless_different(out / DATASET_FILE, json.dumps(document, indent=2) + "\n", overwrite)
    return PreparedDataset(out, [f.case_id for f in todo if f.case_id not in failed], skipped, report)


def write_split_folders(root: Path, splits: dict) -> None:
    """``root/folds/fold<k>/<subset>/<case>``: a link to ``root/cases/<case>`` per case of each subset
    (a copy where the file system cannot link). Entries that exist are kept (a re-run adds the missing
    ones); nothing under ``root/cases`` is touched."""
    for fold in splits["folds"]:
        for subset in SUBSETS:
            folder = root / FOLDS_DIR / f"fold{fold['fold']}" / subset
            folder.mkdir(parents=True, exist_ok=True)
            for case_id in fold[subset]:
                link = folder / case_id
                if link.exists() or link.is_symlink():
                    continue
                target = root / CASES_DIR / case_id
                try:
                    link.symlink_to(os.path.relpath(target, folder), target_is_directory=True)
                except OSError:  # e.g. Windows without the symlink privilege
                    shutil.copytree(target, link)


def _write_unless_different(path: Path, text: str, overwrite: bool) -> None:
    """Write ``text``; an existing file with the same text is left alone (a resumed run), one with other
    text is replaced only with ``overwrite``."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    atomic_write_text(path, text, overwrite=overwrite)
