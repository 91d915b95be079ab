"""Evaluating a model bundle over a folder of preprocessed cases (the paper's protocol, model grid).

Every case is scored once; the three maps of one pass give the paper's ablations:

- ``combined``: AS = β·x̃ + (1 − β)·ŷ (SADM, what ``segment`` thresholds);
- ``stage1``: x̃ alone (Stage I only, i.e. the cDDPM baseline);
- ``unet``: ŷ alone (the SegUnet without the reconstruction term).

Per labelled case: ⌈Dice⌉, AUPRC, AUROC for each variant, and, for ``combined`` at the chosen threshold,
Dice, voxel FPR, lesion detection rate and volume error of the mask that the bundle's operating-point
rule makes (:mod:`AnomalySegLib.scoring.operating_point`: threshold and clean-up, as ``segment``), or of
``AS > t`` alone with ``raw=True`` (the paper's protocol). Cases without labels (or with empty labels) are
healthy: their voxel FPR inside the brain at the threshold is reported. The calibrated threshold belongs
to AS, so the ablations get only the threshold-free metrics (the paper's table reports ⌈Dice⌉/AUPRC).
Optionally (``native=True``), the combined map is also measured on each case's native grid
(:mod:`AnomalySegLib.evaluation.native`).

The paper's protocol (:func:`paper_summary`, ``evaluate --protocol paper``): ⌈Dice⌉ as the authors'
code computes it (10-step bisection, :func:`~AnomalySegLib.metrics.best_dice_bisection`) is the table's
column, the exact ⌈Dice⌉ an extra one; and a labelled case whose lesion vanishes on the model grid
(a label file, empty after resampling) counts with ⌈Dice⌉ = AUPRC = 0, as in the authors' code, instead
of being left out of the means. How many such cases there were is reported.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from AnomalySegLib.bundle import ModelBundle, load_bundle
from AnomalySegLib.errors import InputError
from AnomalySegLib.evaluation.native import native_metrics
from AnomalySegLib.evaluation.pr_curve import PooledPRCurve
from AnomalySegLib.metrics import best_dice_bisection, volume_metrics, voxel_fpr
from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase, list_cases, load_case
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.scoring.operating_point import RAW, CleanUp, apply_operating_point, voxel_size_zyx
from AnomalySegLib.scoring.volume import SCORING_SECTION, AnomalyScorer, VolumeScores

LOG = logging.getLogger(__name__)
COMBINED, STAGE1, UNET = "combined", "stage1", "unet"
VARIANT_NAMES = {COMBINED: "SADM (combined AS)", STAGE1: "Stage I only (x̃)", UNET: "U-Net only (ŷ)"}
DEFAULT_PRESET = "val"
PAPER_METRICS = ("best_dice_bisection", "best_dice", "auprc")  # the paper table's columns, in order


@dataclass(frozen=True)
class CaseResult:
    """Metrics of one case: ``metrics[variant]`` is a :class:`~AnomalySegLib.metrics.VolumeMetrics` dict
    (plus ``best_dice_bisection``) for labelled cases, ``{"fpr": ...}`` for healthy ones.
    ``lesion_vanished``: the case has a label file but no anomaly voxel on the model grid."""

    case_id: str
    healthy: bool
    anomaly_voxels: int
    metrics: dict[str, dict[str, float]]
    lesion_vanished: bool = False


@dataclass
class EvaluationResult:
    """What :func:`evaluate_cases` measured; ``threshold`` is ``None`` when none was available."""

    model: str
    data: str
    threshold: float | None
    threshold_name: str
    seed: int
    variants: list[str]
    cases: list[CaseResult] = field(default_factory=list)
    clean_up: CleanUp = RAW
    pr_curves: dict[str, PooledPRCurve] = field(default_factory=dict)

    def labelled(self) -> list[CaseResult]:
        return [case for case in self.cases if not case.healthy]

    def healthy(self) -> list[CaseResult]:
        return [case for case in self.cases if case.healthy]

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{variant: {metric: {"mean", "std", "n"}}}`` over labelled cases (healthy FPR as
        ``"healthy_fpr"``); NaNs are skipped; std is the population std (ddof 0), as numpy gives it."""
        table: dict[str, dict[str, dict[str, float]]] = {}
        for variant in self.variants:
            values: dict[str, list[float]] = {}
            for case in self.labelled():
                for key, value in case.metrics.get(variant, {}).items():
                    values.setdefault(key, []).append(value)
            for case in self.healthy():
                if "fpr" in case.metrics.get(variant, {}):
                    values.setdefault("healthy_fpr", []).append(case.metrics[variant]["fpr"])
            table[variant] = {key: _mean_std(items) for key, items in values.items()}
        return table


def _mean_std(values: Iterable[float]) -> dict[str, float]:
    finite = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if finite.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}


def resolve_threshold(bundle: ModelBundle, request: str | None) -> tuple[float | None, str]:
    """The threshold asked for: a number, a preset of the bundle (``"val"``, ``"fpr1"``, ...) or, when
    ``request`` is ``None``, the ``"val"`` preset if the bundle has one (else no threshold).

    Raises:
        InputError: an unknown preset name.
    """
    presets = bundle.thresholds
    if request is None:
        return (float(presets[DEFAULT_PRESET]), DEFAULT_PRESET) if DEFAULT_PRESET in presets else (None, "none")
    try:
        return float(request), "given"
    except ValueError:
        pass
    if request not in presets:
        known = ", ".join(sorted(presets)) or "none (run 'anomalyseg calibrate')"
        raise InputError(bundle.path, f"has no threshold preset {request!r} (presets: {known})")
    return float(presets[request]), request


def variant_maps(scores: VolumeScores) -> dict[str, np.ndarray]:
    """The anomaly map ``[Z, Y, X]`` of each variant from one scoring pass (all zero outside the mask)."""
    mask = scores.mask.astype(np.float32)
    maps = {COMBINED: scores.anomaly_score}
    if scores.segmentation_probability is not None:
        maps[STAGE1] = scores.reconstruction_term * mask
        maps[UNET] = scores.segmentation_probability * mask
    return maps


def evaluate_cases(
    scorer: AnomalyScorer,
    cases: Iterable[ModelSpaceCase],
    threshold: float | None,
    *,
    seed: int = 0,
    variants: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
    native_folders: dict[str, Path] | None = None,
    clean_up: CleanUp = RAW,
    voxel_size_mm: tuple[float, float, float] = (2.0, 2.0, 2.0),
) -> tuple[list[CaseResult], dict[str, PooledPRCurve]]:
    """Score each case and measure it (see the module docstring).

    Args:
        scorer: the model (with its SegUnet for the ablations).
        cases: preprocessed cases; ``labels`` ``None`` or empty = healthy.
        threshold: the threshold of AS for the ``combined`` metrics at a threshold (``None``: skip them).
        seed: Stage I noise seed, the same for every case (as at inference and calibration).
        variants: which of ``combined``/``stage1``/``unet`` to report (default: all available).
        progress: called with each case id before it is scored.
        native_folders: case id → case folder, to add the native-grid metrics of ``combined``
            (labelled cases only).
        clean_up: the operating point's clean-up for the metrics at ``threshold`` (:data:`RAW`: none).
        voxel_size_mm: the model grid's voxel size ``(dz, dy, dx)``, for the clean-up's mm and ml.

    Returns:
        per-case results and the pooled PR curve of each variant (labelled cases only).
    """
    wanted = None if variants is None else list(variants)
    results: list[CaseResult] = []
    curves: dict[str, PooledPRCurve] = {}
    for case in cases:
        if progress is not None:
            progress(case.case_id)
        scores = scorer.score(case.image, case.mask, seed=seed)
        maps = {name: value for name, value in variant_maps(scores).items() if wanted is None or name in wanted}
        healthy = case.labels is None or not case.labels.any()
        metrics: dict[str, dict[str, float]] = {}
        for name, score_map in maps.items():
            at = threshold if name == COMBINED else None
            predicted = None if at is None else apply_operating_point(score_map, voxel_size_mm, at, clean_up)
            if healthy:
                fpr = float("nan") if at is None else voxel_fpr(predicted, np.zeros(score_map.shape, bool), case.mask)
                metrics[name] = {"fpr": fpr}
                continue
            metrics[name] = volume_metrics(score_map, case.labels, at, case.mask, prediction=predicted).to_dict()
            metrics[name].update(paper_case_metrics(score_map, case.labels))
            curves.setdefault(name, PooledPRCurve()).add(score_map, case.labels)
            if name == COMBINED and native_folders is not None:
                metrics[name].update(native_metrics(native_folders[case.case_id], score_map, at, clean_up))
        voxels = 0 if case.labels is None else int(case.labels.sum())
        results.append(CaseResult(case.case_id, healthy, voxels, metrics, lesion_vanished=lesion_vanished(case)))
        LOG.info("%s: %s", case.case_id, ", ".join(
            f"{name} ⌈Dice⌉ {values['best_dice']:.3f}" for name, values in metrics.items() if "best_dice" in values
        ) or "healthy")
    return results, curves


def evaluate_bundle(
    model: str | Path,
    data: str | Path,
    threshold: str | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
    variants: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
    native: bool = False,
    raw: bool = False,
) -> EvaluationResult:
    """Load the bundle ``model`` and evaluate it on every case folder under ``data``.

    Args:
        threshold: a number or a preset name of the bundle (default: its ``"val"`` preset).
        native: also measure the combined map on each labelled case's native grid.
        raw: metrics at the threshold without the bundle's clean-up (the paper's protocol).

    Raises:
        ModelBundleError: the bundle is unusable. InputError: ``data`` holds no case, an unknown preset.
    """
    bundle = load_bundle(model)
    value, name = resolve_threshold(bundle, threshold)
    try:
        clean_up = RAW if raw else CleanUp.from_scoring(bundle.description.get(SCORING_SECTION, {}))
    except ValueError as error:
        raise InputError(bundle.path, f"invalid scoring section ({error})") from error
    grid = PreprocessingSpec.from_dict(bundle.description.get("preprocessing", {})).grid
    folders = list_cases(data)
    scorer = AnomalyScorer.from_bundle(bundle, device=device, precision=precision)
    cases = (load_case(folder) for folder in folders)
    native_folders = {folder.name: folder for folder in folders} if native else None
    results, curves = evaluate_cases(scorer, cases, value, seed=seed, variants=variants, progress=progress,
                                     native_folders=native_folders, clean_up=clean_up,
                                     voxel_size_mm=voxel_size_zyx(grid.spacing))
    used = [variant for variant in (COMBINED, STAGE1, UNET) if any(variant in case.metrics for case in results)]
    return EvaluationResult(str(model), str(data), value, name, seed, used, results, clean_up=clean_up,
                            pr_curves=curves)


def lesion_vanished(case: ModelSpaceCase) -> bool:
    """A labelled case (it has a label file) whose anomaly has no voxel on the model grid."""
    return case.labels is not None and not case.labels.any()


def paper_case_metrics(score_map: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The paper's per-volume extras of a labelled case: ⌈Dice⌉ by the authors' 10-step bisection."""
    return {"best_dice_bisection": best_dice_bisection(score_map, labels)[0]}


def paper_summary(result: EvaluationResult) -> dict:
    """Table 1's numbers under the paper's protocol.

    Every labelled case counts, including those whose lesion vanished on the grid (⌈Dice⌉ = AUPRC = 0,
    as the authors' code gives them). Mean and population std are over volumes; the paper's ± is the
    std over its 5 Stage I folds (average the per-fold means, see docs/evaluation.md).

    Returns:
        ``{"variants": {variant: {metric: {"mean", "std", "n"}}}, "labelled": n, "vanished": n,
        "vanished_cases": [ids]}`` with metrics :data:`PAPER_METRICS`.
    """
    vanished = [case for case in result.cases if case.lesion_vanished]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for variant in result.variants:
        values: dict[str, list[float]] = {metric: [] for metric in PAPER_METRICS}
        for case in result.labelled():
            for metric in PAPER_METRICS:
                values[metric].append(case.metrics.get(variant, {}).get(metric, float("nan")))
        for _ in vanished:
            for metric in PAPER_METRICS:
                values[metric].append(0.0)
        table[variant] = {metric: _mean_std(items) for metric, items in values.items()}
    return {
        "variants": table,
        "labelled": len(result.labelled()) + len(vanished),
        "vanished": len(vanished),
        "vanished_cases": sorted(case.case_id for case in vanished),
    }


def paper_table(result: EvaluationResult) -> str:
    """:func:`paper_summary` as a Markdown table (percent, mean ± std over volumes)."""
    summary = paper_summary(result)
    lines = [
        f"Paper protocol: {summary['labelled']} labelled volumes, of which {summary['vanished']} have no "
        "lesion voxel on the model grid and count with ⌈Dice⌉ = AUPRC = 0.",
        "",
        "| variant | ⌈Dice⌉ (paper, bisection) % | ⌈Dice⌉ (exact) % | AUPRC % |",
        "|---|---|---|---|",
    ]
    for variant, metrics in summary["variants"].items():
        cells = [f"{100 * metrics[m]['mean']:.1f} ± {100 * metrics[m]['std']:.1f}" for m in PAPER_METRICS]
        lines.append(f"| {VARIANT_NAMES.get(variant, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
