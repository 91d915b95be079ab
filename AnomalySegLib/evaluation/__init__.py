"""Evaluation of a model bundle on preprocessed cases: metrics per case, summary report, PR curve."""

from AnomalySegLib.evaluation.evaluate import (
    COMBINED,
    STAGE1,
    UNET,
    CaseResult,
    EvaluationResult,
    evaluate_bundle,
    evaluate_cases,
    resolve_threshold,
    variant_maps,
)
from AnomalySegLib.evaluation.pr_curve import PooledPRCurve, write_pr_figure
from AnomalySegLib.evaluation.report import write_report

__all__ = [
    "COMBINED", "STAGE1", "UNET", "CaseResult", "EvaluationResult", "PooledPRCurve", "evaluate_bundle",
    "evaluate_cases", "resolve_threshold", "variant_maps", "write_pr_figure", "write_report",
]
