"""Writing an :class:`~AnomalySegLib.evaluation.evaluate.EvaluationResult` as a report folder.

``REPORT/`` gets ``report.md`` (mean ± std table, then one row per case), ``cases.csv`` (one row per
case and variant, every metric), ``report.json`` (settings, summary and per-case values; NaN as null)
and ``pr_curve.png`` (pooled precision-recall curve of each variant). Nothing existing is overwritten
unless asked; every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from AnomalySegLib.evaluation.evaluate import VARIANT_NAMES, EvaluationResult
from AnomalySegLib.evaluation.pr_curve import write_pr_figure
from AnomalySegLib.io.atomic import atomic_write_text, check_writable

REPORT_FILES = ("report.md", "cases.csv", "report.json", "pr_curve.png")
#: (key, column title, scale, unit) of the summary table; fractions are shown in %.
COLUMNS = (
    ("best_dice", "⌈Dice⌉", 100.0, "%"),
    ("auprc", "AUPRC", 100.0, "%"),
    ("auroc", "AUROC", 100.0, "%"),
    ("dice", "Dice@t", 100.0, "%"),
    ("fpr", "FPR@t", 100.0, "%"),
    ("detection_rate", "lesions found", 100.0, "%"),
    ("volume_error_ml", "volume error", 1.0, "ml"),
    ("healthy_fpr", "healthy FPR@t", 100.0, "%"),
    ("native_best_dice", "native ⌈Dice⌉", 100.0, "%"),
    ("native_auprc", "native AUPRC", 100.0, "%"),
    ("native_dice", "native Dice@t", 100.0, "%"),
)
CSV_METRICS = ("best_dice", "best_threshold", "auprc", "auroc", "dice", "fpr", "detection_rate",
               "false_positive_components", "true_volume_ml", "volume_error_ml", "volume_error_relative",
               "native_best_dice", "native_auprc", "native_dice")


def write_report(result: EvaluationResult, folder: str | Path, overwrite: bool = False) -> list[Path]:
    """Write the four report files into ``folder`` (created if needed); returns their paths.

    Raises:
        OutputExistsError: one of them exists and ``overwrite`` is false (checked before writing any).
    """
    folder = Path(folder)
    for name in REPORT_FILES:
        check_writable(folder / name, overwrite)
    title = f"{Path(result.model).name} on {Path(result.data).name}"
    return [
        atomic_write_text(folder / "report.md", markdown(result), overwrite),
        atomic_write_text(folder / "cases.csv", cases_csv(result), overwrite),
        atomic_write_text(folder / "report.json", json.dumps(to_json(result), indent=2) + "\n", overwrite),
        write_pr_figure(result.pr_curves, folder / "pr_curve.png", title, overwrite),
    ]


def _format(value: float, scale: float, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{value * scale:.{digits}f}"


def summary_table(result: EvaluationResult) -> str:
    """The Markdown mean ± std table: one row per variant, the columns of :data:`COLUMNS` that have data."""
    summary = result.summary()
    columns = [c for c in COLUMNS if any(summary[v].get(c[0], {}).get("n", 0) for v in result.variants)]
    header = "| model | " + " | ".join(f"{title} ({unit})" for _, title, _, unit in columns) + " |"
    lines = [header, "|---|" + "---|" * len(columns)]
    for variant in result.variants:
        cells = []
        for key, _, scale, _ in columns:
            stats = summary[variant].get(key)
            if not stats or stats["n"] == 0:
                cells.append("–")
            else:
                cells.append(f"{_format(stats['mean'], scale)} ± {_format(stats['std'], scale)}")
        lines.append(f"| {VARIANT_NAMES.get(variant, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _clean_up_text(result: EvaluationResult) -> str:
    clean_up = result.clean_up
    if clean_up.is_raw:
        return "AS > t alone (the paper's protocol, no clean-up)"
    return (f"AS > t, then rim erosion {clean_up.rim_erosion_mm:g} mm, median {clean_up.median_mm:g} mm, "
            f"findings below {clean_up.min_finding_ml:g} ml dropped (the bundle's operating point, as 'segment')")


def markdown(result: EvaluationResult) -> str:
    """The whole ``report.md``."""
    threshold = "none" if result.threshold is None else f"{result.threshold:.4f} ({result.threshold_name})"
    labelled, healthy = result.labelled(), result.healthy()
    parts = [
        "# AnomalySeg evaluation",
        "",
        f"- model: `{result.model}`",
        f"- data: `{result.data}` ({len(labelled)} labelled, {len(healthy)} healthy cases)",
        f"- threshold t of the combined score: {threshold}; Stage I noise seed {result.seed}",
        f"- mask @t: {_clean_up_text(result)}",
        "- metrics per volume on the model grid (96×96×50, 2 mm), mean ± std over volumes; ⌈Dice⌉ uses the "
        "best threshold of each volume (oracle); metrics @t only for the combined score",
        "",
        summary_table(result),
        "",
        "## Cases",
        "",
        "| case | anomaly voxels | " + " | ".join(f"{VARIANT_NAMES.get(v, v)} ⌈Dice⌉ / AUPRC (%)"
                                                  for v in result.variants) + " | Dice@t (%) | FPR@t (%) |",
        "|---|---|" + "---|" * (len(result.variants) + 2),
    ]
    for case in result.cases:
        cells = []
        for variant in result.variants:
            values = case.metrics.get(variant, {})
            best, precision = values.get("best_dice", math.nan), values.get("auprc", math.nan)
            cells.append("healthy" if case.healthy else f"{_format(best, 100)} / {_format(precision, 100)}")
        combined = case.metrics.get(result.variants[0], {}) if result.variants else {}
        cells.append(_format(combined.get("dice", math.nan), 100))
        cells.append(_format(combined.get("fpr", math.nan), 100, 3))
        parts.append(f"| {case.case_id} | {case.anomaly_voxels} | " + " | ".join(cells) + " |")
    parts += ["", "![precision-recall](pr_curve.png)", ""]
    return "\n".join(parts)


def cases_csv(result: EvaluationResult) -> str:
    """One row per case and variant; empty cells for metrics that do not apply."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "variant", "healthy", "anomaly_voxels", *CSV_METRICS])
    for case in result.cases:
        for variant, values in case.metrics.items():
            row = [values.get(key, math.nan) for key in CSV_METRICS]
            writer.writerow([case.case_id, variant, int(case.healthy), case.anomaly_voxels,
                             *("" if math.isnan(v) else repr(float(v)) for v in row)])
    return buffer.getvalue()


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def to_json(result: EvaluationResult) -> dict:
    """Settings, summary (``{variant: {metric: {mean, std, n}}}``) and per-case metrics; NaN → null."""
    has_native = any("native_best_dice" in case.metrics.get("combined", {}) for case in result.cases)
    document = {
        "model": result.model,
        "data": result.data,
        "threshold": result.threshold,
        "threshold_name": result.threshold_name,
        "clean_up": result.clean_up.to_dict(),
        "seed": result.seed,
        "grid": "model and native" if has_native else "model",
        "variants": result.variants,
        "summary": result.summary(),
        "pooled_average_precision": {name: curve.average_precision() for name, curve in result.pr_curves.items()},
        "cases": [
            {"case": case.case_id, "healthy": case.healthy, "anomaly_voxels": case.anomaly_voxels,
             "metrics": case.metrics}
            for case in result.cases
        ],
    }
    return _json_safe(document)
