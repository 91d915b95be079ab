"""Names of the files ``segment`` writes: one definition, torch-free (the Slicer module imports it).

Per case ``<id>`` in the output folder (see :mod:`AnomalySegLib.outputs` for what each holds), plus
the run's tables ``results.csv`` and ``results.json``.
"""

from __future__ import annotations

from pathlib import Path

#: Output role → file name pattern (``{}`` is the case id); the order is the order of writing.
CASE_FILES: dict[str, str] = {
    "recon": "{}_recon.nii.gz",
    "anomaly_map": "{}_anomaly_map.nii.gz",
    "anomaly_mask": "{}_anomaly_mask.nii.gz",
    "segmentation": "{}_anomaly.seg.nrrd",
    "qc": "{}_qc.png",
    "findings": "{}_findings.csv",
}
ROLES: tuple[str, ...] = tuple(CASE_FILES)
#: The case's row of the results table; written last, it marks the case complete.
RESULT_FILE = "{}_result.json"
#: Written before a case's first output and removed after its result file: a run killed in between
#: leaves it, so a re-run knows the outputs next to it are its own unfinished work.
WRITING_MARKER = ".{}_writing.json"
#: ``--save-intermediate``: the model-space volumes.
MODEL_SPACE_FOLDER = "{}_model_space"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"


def case_file(folder: str | Path, case_id: str, role: str) -> Path:
    """The path of ``case_id``'s output ``role`` (a key of :data:`CASE_FILES`) in ``folder``."""
    return Path(folder) / CASE_FILES[role].format(case_id)
