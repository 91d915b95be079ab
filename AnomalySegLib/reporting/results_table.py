"""The output folder's table of results: ``results.csv`` (one row per case) and ``results.json`` (rows + runs).

The table holds every case of the folder: a run's rows are merged by case id into the table an
earlier run left (a case processed again gets its new row; the others keep theirs).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from AnomalySegLib.io.atomic import atomic_write_text
from AnomalySegLib.output_names import RESULTS_CSV, RESULTS_JSON
from AnomalySegLib.quality.catalogue import MEASURES, column_name

log = logging.getLogger(__name__)

#: Columns of results.csv, in order. Volumes in ml, scores in anomaly-map units, times in seconds;
#: ``qc_warnings`` joined by "; "; ``scored_brain_fraction`` in [0, 1]; ``domain_<measure>``: the domain
#: check's measures (AnomalySegLib.quality.catalogue).
COLUMNS = (
    "case", "status", "error", "qc_warnings", "input", "mask_source",
    "volume_ml", "components", "largest_component_ml", "max_score", "mean_score_in_finding",
    "threshold", "threshold_source", "model", "engine_version", "device", "precision", "scored_brain_fraction",
    "seconds_total", "seconds_load", "seconds_preprocess", "seconds_reconstruct", "seconds_segment",
    "seconds_score", "seconds_restore", "seconds_write",
    *(column_name(measure) for measure in MEASURES),
)


def write_results_table(rows: Sequence[Mapping[str, Any]], folder: str | Path,
                        run: Mapping[str, Any]) -> tuple[Path, Path]:
    """Merge ``rows`` into the folder's ``results.csv`` and ``results.json``; returns their paths.

    Rows may carry more keys than :data:`COLUMNS` (they go to the JSON only); missing ones are empty.
    ``results.json`` keeps the info of every run (``"runs"``, the latest last).
    """
    folder = Path(folder)
    previous_cases, previous_runs = _previous_table(folder / RESULTS_JSON)
    merged = {str(row.get("case")): dict(row) for row in previous_cases}
    merged.update({str(row["case"]): dict(row) for row in rows})
    all_rows = [merged[case] for case in sorted(merged)]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in all_rows:
        writer.writerow({key: _cell(row.get(key)) for key in COLUMNS})
    csv_path = atomic_write_text(folder / RESULTS_CSV, text.getvalue(), overwrite=True)
    document = {"runs": [*previous_runs, dict(run)], "cases": all_rows}
    json_path = atomic_write_text(folder / RESULTS_JSON, json.dumps(document, indent=2, allow_nan=False),
                                  overwrite=True)
    return csv_path, json_path


def _previous_table(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The case rows and run infos of an earlier ``results.json`` (empty when there is none)."""
    if not path.is_file():
        return [], []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        cases = [row for row in document["cases"] if isinstance(row, dict) and "case" in row]
        runs = document.get("runs") or ([document["run"]] if "run" in document else [])
        return cases, list(runs)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        kept = path.with_name(path.name + ".unreadable")
        path.replace(kept)  # never lose it; the per-case <case>_result.json files hold every finished case too
        log.warning("%s: earlier table unreadable (%s); kept as %s, a new table starts", path, error, kept.name)
        return [], []


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(str(item) for item in value)
    return value
