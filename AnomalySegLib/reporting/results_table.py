"""The run's table of results: ``results.csv`` (one row per case) and ``results.json`` (rows + run info)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from AnomalySegLib.io.atomic import atomic_write_text
from AnomalySegLib.quality.catalogue import MEASURES, column_name

#: Columns of results.csv, in order. Volumes in ml, scores in anomaly-map units, times in seconds;
#: ``domain_<measure>``: the domain check's measures (AnomalySegLib.quality.catalogue).
COLUMNS = (
    "case", "status", "error", "input", "mask_source",
    "volume_ml", "components", "largest_component_ml", "max_score", "mean_score_in_finding",
    "threshold", "threshold_source", "model", "engine_version", "device",
    "seconds_total", "seconds_load", "seconds_preprocess", "seconds_reconstruct", "seconds_segment",
    "seconds_score", "seconds_restore", "seconds_write",
    *(column_name(measure) for measure in MEASURES),
)


def write_results_table(rows: Sequence[Mapping[str, Any]], folder: str | Path,
                        run: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.json`` in ``folder`` (replacing the previous run's table).

    Rows may carry more keys than :data:`COLUMNS` (they go to the JSON only); missing ones are empty.
    """
    folder = Path(folder)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row.get(key)) for key in COLUMNS})
    csv_path = atomic_write_text(folder / "results.csv", text.getvalue(), overwrite=True)
    document = {"run": dict(run), "cases": [dict(row) for row in rows]}
    json_path = atomic_write_text(folder / "results.json", json.dumps(document, indent=2, allow_nan=False),
                                  overwrite=True)
    return csv_path, json_path


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
