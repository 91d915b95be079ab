"""The findings table of one case in the module: read from the engine, shown as rows, jumped to.

The engine writes the table (``<case>_findings.csv``, path reported as ``findings_csv`` in the
``case_done`` progress event), one flat row per finding with the columns of
``AnomalySegLib.reporting.findings.FINDINGS_COLUMNS`` (``rank``, ``volume_ml``, ``centroid_r_mm``,
``centroid_a_mm``, ``centroid_s_mm``, ``extent_*_mm``, ``max_score``, ``mean_score``, ``first_slice``,
``last_slice``); the module reads the ones it shows. After the slider re-thresholds, the table is recomputed by the engine's own code
from the new mask (:func:`SceneGlue.anomalyStatistics`). MRML only, no Qt: the jump works on the
slice nodes of any scene, inside Slicer and under ``slicer-core``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import slicer

#: Columns the module shows, in order: (header, key of :class:`FindingRow`).
TABLE_COLUMNS = (("#", "rank"), ("Volume (ml)", "volumeMl"), ("Centre R, A, S (mm)", "centroidRas"),
                 ("Max score", "maxScore"))
#: The engine's columns of the centre of a finding, R, A, S (mm).
CENTROID_COLUMNS = ("centroid_r_mm", "centroid_a_mm", "centroid_s_mm")


@dataclass(frozen=True)
class FindingRow:
    """One finding as the table shows it: its rank (1 = largest), volume, centre in RAS mm, peak score."""

    rank: int
    volumeMl: float
    centroidRas: tuple[float, float, float]
    maxScore: float

    def cells(self) -> tuple[str, str, str, str]:
        """The row's text, in the order of :data:`TABLE_COLUMNS`."""
        r, a, s = self.centroidRas
        return (str(self.rank), f"{self.volumeMl:.2f}", f"{r:.1f}, {a:.1f}, {s:.1f}", f"{self.maxScore:.3f}")


def findingRowsFromRecords(records: Sequence[Mapping[str, object]]) -> list[FindingRow]:
    """Rows from the engine's flat finding records (``Findings.records()`` or the rows of the CSV), by rank.

    Raises:
        ValueError: a record lacks a column or holds a value that is not a number, naming both.
    """
    rows = []
    for record in records:
        try:
            r, a, s = (float(record[column]) for column in CENTROID_COLUMNS)
            rows.append(FindingRow(rank=int(float(record["rank"])), volumeMl=float(record["volume_ml"]),
                                   centroidRas=(r, a, s), maxScore=float(record["max_score"])))
        except KeyError as missing:
            raise ValueError(f"finding record without column {missing}: {dict(record)}") from None
        except (TypeError, ValueError) as error:
            raise ValueError(f"finding record with a value that is not a number ({error}): {dict(record)}") from None
    return sorted(rows, key=lambda row: row.rank)


def readFindingsCsv(path: str | Path) -> list[FindingRow]:
    """The rows of a ``<case>_findings.csv`` written by the engine.

    Raises:
        ValueError: the file is not a findings table (message names the file).
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as stream:
        records = list(csv.DictReader(stream))
    try:
        return findingRowsFromRecords(records)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def jumpSlicesTo(scene: "slicer.vtkMRMLScene", ras: Sequence[float]) -> int:
    """Centre every slice view of ``scene`` on the point ``ras`` (R, A, S in mm); returns how many.

    The same as ``slicer.modules.markups.logic().JumpSlicesToLocation(r, a, s, True)`` in the
    application, written with MRML alone so that it also runs under ``slicer-core``.
    """
    r, a, s = (float(value) for value in ras)
    if not all(math.isfinite(value) for value in (r, a, s)):
        raise ValueError(f"cannot jump to a point that is not finite: {ras}")
    count = scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")
    for index in range(count):
        scene.GetNthNodeByClass(index, "vtkMRMLSliceNode").JumpSliceByCentering(r, a, s)
    return count
