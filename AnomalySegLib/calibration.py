"""Calibration (``anomalyseg calibrate``): thresholds for binarising anomaly scores, stored in the bundle.

- **Dice-optimal threshold**: the model scores every labelled validation volume; all their voxels are
  pooled and the threshold maximising Dice over the pool is found by interval halving (the paper's
  code; :func:`~AnomalySegLib.scoring.thresholds.bisection_dice_threshold`).
- **β (optional)**: given candidate weights, the reconstruction term's weight β in AS is chosen as the
  one whose Dice-optimal threshold gives the best pooled validation Dice (ties: the candidate nearest
  the bundle's β). The paper fixes β (a plain sum); a small model whose Stage I reconstructs blurrily
  may do better leaning on the SegUnet, and this lets validation data, not the test set, decide.
- **Healthy-set thresholds**: on healthy volumes, the thresholds at which 1 %, 5 % and 10 % of in-brain
  voxels would be flagged (voxel false-positive rates).

Both go into the bundle's ``"scoring"`` section as ``"thresholds": {"val": t, "fpr1": t1, "fpr5": t5,
"fpr10": t10}`` (the presets ``segment`` offers) together with what they were computed on
(``"calibration"``), so anyone can check them: applying ``thresholds["val"]`` to the same validation
set with the same model and seed reproduces ``calibration["validation_dice"]``.

- **Operating point** (``--healthy`` with ``--lesion-copies`` > 0, the default): the ``"val"`` threshold
  *and* the clean-up (rim erosion, median, minimum finding size in ml) are chosen together by the
  stated rule of :mod:`AnomalySegLib.operating_point_search` on the healthy cases (never trained on)
  and lesioned copies of them: the best mean lesion Dice among the points that flag at most
  ``max_healthy_ml`` / ``max_healthy_findings`` on every healthy case. It replaces the pooled-voxel
  threshold above, which ignores the clean-up; the evidence goes into ``calibration["operating_point"]``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from AnomalySegLib.bundle import DESCRIPTION_FILE, ModelBundle, load_bundle, save_bundle
from AnomalySegLib.choices import DEFAULT_FPR_RATES, VALIDATION_PRESET, fpr_preset
from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.io.atomic import atomic_write_text
from AnomalySegLib.operating_point_search import SearchResult, SearchRule, lesioned_copies, search_operating_point
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.scoring.operating_point import voxel_size_zyx
from AnomalySegLib.metrics import dice, volume_metrics
from AnomalySegLib.preprocessing.case_folder import LABELS_FILE, ModelSpaceCase
from AnomalySegLib.scoring.thresholds import bisection_dice_threshold, fpr_thresholds
from AnomalySegLib.scoring.anomaly_score import combined_score
from AnomalySegLib.scoring.volume import SCORING_SECTION, AnomalyScorer, VolumeScores
from AnomalySegLib.preprocessing.case_folder import load_case_folder

#: The precision at which the recipes choose a bundled model's operating point: fp32, which every machine
#: runs (``auto`` is bf16 on CPUs with native bf16; those scores differ from fp32 by at most 0.06, mean 1e-4).
PORTABLE_PRECISION = "fp32"

LOG = logging.getLogger(__name__)
BISECTION_STEPS = 10


@dataclass
class CalibrationResult:
    """Thresholds and the evidence for them (JSON-ready via :meth:`to_scoring_entries`).

    Attributes:
        threshold: the Dice-optimal threshold on the pooled validation voxels.
        validation_dice: Dice of ``AS > threshold`` over the pooled validation voxels.
        validation_cases: ids of the labelled validation volumes.
        per_case: per-volume metrics (⌈Dice⌉, Dice at ``threshold``, AUPRC, AUROC, FPR).
        healthy_thresholds: ``{"fpr1": t, "fpr5": t, "fpr10": t}`` (voxel FPR in %), or empty without
            healthy data.
        healthy_cases: ids of the healthy volumes.
        seed: Stage I noise seed used for scoring.
        beta: the chosen weight of the reconstruction term, or ``None`` when β was not searched.
        beta_search: pooled validation Dice of each candidate β (empty when β was not searched).
    """

    threshold: float
    validation_dice: float
    validation_cases: list[str]
    per_case: dict[str, dict[str, float]]
    healthy_thresholds: dict[str, float] = field(default_factory=dict)
    healthy_cases: list[str] = field(default_factory=list)
    seed: int = 0
    beta: float | None = None
    beta_search: dict[float, float] = field(default_factory=dict)

    def to_scoring_entries(self) -> dict:
        """The keys this calibration writes into the bundle's ``"scoring"`` section."""
        mean = {
            key: float(np.nanmean([metrics[key] for metrics in self.per_case.values()]))
            for key in ("best_dice", "dice", "auprc", "auroc")
        }
        entries = {
            "thresholds": {VALIDATION_PRESET: self.threshold, **self.healthy_thresholds},
            "calibration": {
                "method": f"Dice-optimal threshold on pooled validation voxels, bisection ({BISECTION_STEPS} steps)",
                "validation_dice": self.validation_dice,
                "validation_cases": list(self.validation_cases),
                "validation_mean": mean,
                "per_case": self.per_case,
                "healthy_cases": list(self.healthy_cases),
                "healthy_method": "quantiles of in-brain voxel scores of healthy volumes (voxel FPR)",
                "seed": self.seed,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        }
        if self.beta is not None:
            entries["beta"] = self.beta
            entries["calibration"]["beta_search"] = {
                "method": "beta with the best pooled validation Dice at its own Dice-optimal threshold",
                "validation_dice": {f"{beta:g}": value for beta, value in self.beta_search.items()},
            }
        return entries


def calibrate(
    scorer: AnomalyScorer,
    validation_cases: Sequence[ModelSpaceCase],
    healthy_cases: Sequence[ModelSpaceCase] = (),
    rates: Sequence[float] = DEFAULT_FPR_RATES,
    seed: int = 0,
    beta_candidates: Sequence[float] = (),
) -> CalibrationResult:
    """Score the cases with ``scorer`` and derive the thresholds (and β, given candidates).

    Args:
        validation_cases: labelled volumes (each with ``labels``).
        healthy_cases: healthy volumes for the FPR thresholds (optional).
        rates: voxel false-positive rates for the healthy thresholds.
        seed: Stage I noise seed (the same for every volume, as at inference).
        beta_candidates: weights β in [0, 1] to choose from (empty: keep the scorer's β).

    Raises:
        InputError: no validation case, one without labels, or β candidates for a Stage-I-only model.
    """
    if not validation_cases:
        raise InputError(None, "calibration needs at least one labelled validation case")
    if beta_candidates and scorer.seg_network is None:
        raise InputError(None, "choosing beta needs a model with a Stage II SegUnet")
    volumes: list[VolumeScores] = []
    for case in validation_cases:
        if case.labels is None:
            raise InputError(case.case_id, f"has no {LABELS_FILE}: validation cases need ground truth")
        LOG.info("scoring validation case %s", case.case_id)
        volumes.append(scorer.score(case.image, case.mask, seed=seed))
    pooled_truth = np.concatenate([case.labels.ravel() for case in validation_cases])

    beta_search: dict[float, float] = {}
    for beta in beta_candidates:
        pooled = np.concatenate([_rescored(volume, scorer, beta).ravel() for volume in volumes])
        _, candidate_threshold = bisection_dice_threshold(pooled, pooled_truth, steps=BISECTION_STEPS)
        beta_search[float(beta)] = dice(pooled > candidate_threshold, pooled_truth)
        LOG.info("beta %g: pooled validation Dice %.4f", beta, beta_search[float(beta)])
    beta = None
    if beta_search:
        beta = max(beta_search, key=lambda b: (beta_search[b], -abs(b - scorer.config.beta)))
        scorer = AnomalyScorer(scorer.reconstructor, scorer.seg_network,
                               dataclasses.replace(scorer.config, beta=beta))
    scores = [_rescored(volume, scorer, scorer.config.beta) for volume in volumes]
    pooled_scores = np.concatenate([s.ravel() for s in scores])
    _, threshold = bisection_dice_threshold(pooled_scores, pooled_truth, steps=BISECTION_STEPS)
    per_case = {
        case.case_id: volume_metrics(score, case.labels, threshold, case.mask).to_dict()
        for case, score in zip(validation_cases, scores)
    }
    healthy_thresholds: dict[str, float] = {}
    if healthy_cases:
        in_brain = []
        for case in healthy_cases:
            LOG.info("scoring healthy case %s", case.case_id)
            result = scorer.score(case.image, case.mask, seed=seed)
            in_brain.append(result.anomaly_score[result.mask])
        thresholds = fpr_thresholds(np.concatenate(in_brain), tuple(rates))
        healthy_thresholds = {fpr_preset(rate): value for rate, value in thresholds.items()}
    return CalibrationResult(
        threshold=threshold,
        validation_dice=dice(pooled_scores > threshold, pooled_truth),
        validation_cases=[case.case_id for case in validation_cases],
        per_case=per_case,
        healthy_thresholds=healthy_thresholds,
        healthy_cases=[case.case_id for case in healthy_cases],
        seed=seed,
        beta=beta,
        beta_search=beta_search,
    )


OPERATING_POINT_METHOD = (
    "threshold and clean-up (rim erosion mm, median mm, minimum finding ml) with the best mean Dice on "
    "lesioned copies of held-out healthy scans, among those flagging at most {max_ml:g} ml and {max_findings} "
    "findings on every unchanged held-out healthy scan (model grid; AnomalySegLib.operating_point_search)"
)


@dataclass
class OperatingPointCalibration:
    """The operating point chosen by :func:`calibrate_operating_point` and the healthy-FPR presets of the
    same held-out healthy cases."""

    search: SearchResult
    rule: SearchRule
    healthy_thresholds: dict[str, float]
    healthy_cases: list[str]
    seed: int

    def to_scoring_entries(self) -> dict:
        """``thresholds`` (val + fpr presets), the clean-up keys and ``calibration["operating_point"]``."""
        evidence = {
            "method": OPERATING_POINT_METHOD.format(max_ml=self.rule.max_healthy_ml,
                                                    max_findings=self.rule.max_healthy_findings),
            "rule": self.rule.to_dict(),
            "healthy_cases": list(self.healthy_cases),
            **self.search.to_dict(),
        }
        return {
            "thresholds": {VALIDATION_PRESET: self.search.threshold, **self.healthy_thresholds},
            **self.search.clean_up.to_dict(),
            "operating_point": evidence,
        }


def calibrate_operating_point(scorer: AnomalyScorer, healthy_cases: Sequence[ModelSpaceCase], rule: SearchRule,
                              voxel_size_mm: Sequence[float], rates: Sequence[float] = DEFAULT_FPR_RATES,
                              seed: int = 0) -> OperatingPointCalibration:
    """Score held-out healthy cases and lesioned copies of them; choose the operating point
    (:mod:`AnomalySegLib.operating_point_search`) and the voxel-FPR presets on the healthy cases.

    Raises:
        InputError: no healthy case.
    """
    if not healthy_cases:
        raise InputError(None, "choosing the operating point needs held-out healthy cases (--healthy)")
    healthy_scores = {}
    for case in healthy_cases:
        LOG.info("scoring healthy case %s", case.case_id)
        healthy_scores[case.case_id] = scorer.score(case.image, case.mask, seed=seed)
    copies, inventory = lesioned_copies(healthy_cases, rule, voxel_size_mm)
    lesion_scores = []
    for copy in copies:
        LOG.info("scoring lesioned copy %s", copy.case_id)
        lesion_scores.append(scorer.score(copy.image, copy.mask, seed=seed).anomaly_score)
    search = search_operating_point(lesion_scores, [copy.labels for copy in copies],
                                    {k: v.anomaly_score for k, v in healthy_scores.items()}, voxel_size_mm, rule,
                                    [copy.case_id for copy in copies])
    search.lesion_inventory = inventory
    in_brain = np.concatenate([v.anomaly_score[v.mask] for v in healthy_scores.values()])
    thresholds = fpr_thresholds(in_brain, tuple(rates))
    return OperatingPointCalibration(search, rule, {fpr_preset(rate): value for rate, value in thresholds.items()},
                                     [case.case_id for case in healthy_cases], seed)


def describe_operating_point(result: OperatingPointCalibration) -> str:
    """A few human-readable lines about a chosen operating point."""
    search, clean_up = result.search, result.search.clean_up
    lines = [
        f"operating point: threshold {search.threshold:.6g}, rim erosion {clean_up.rim_erosion_mm:g} mm, "
        f"median {clean_up.median_mm:g} mm, minimum finding {clean_up.min_finding_ml:g} ml "
        f"({search.candidates} combinations tried)",
        f"  mean Dice {search.mean_dice:.4f} on {len(search.lesion_dice)} lesioned volume(s)",
    ]
    if not search.limit_met:
        lines.append(f"  WARNING: no combination met the healthy limit ({result.rule.max_healthy_ml:g} ml, "
                     f"{result.rule.max_healthy_findings} findings); the closest one was taken")
    for case_id, values in search.healthy.items():
        lines.append(f"  healthy {case_id}: {values['flagged_ml']:.2f} ml in {values['findings']} finding(s)")
    for preset, value in result.healthy_thresholds.items():
        lines.append(f"healthy voxel FPR {preset.removeprefix('fpr')} %: threshold {value:.6g}")
    return "\n".join(lines)


def scoring_section_with(section: dict, result: CalibrationResult | None,
                         operating_point: OperatingPointCalibration | None) -> dict:
    """``section`` (a bundle's ``"scoring"``) updated with a calibration and/or a chosen operating point."""
    section = dict(section)
    section.pop("min_component_voxels", None)  # superseded by min_finding_ml
    if result is not None:
        section.update(result.to_scoring_entries())
    if operating_point is not None:
        entries = operating_point.to_scoring_entries()
        evidence = entries.pop("operating_point")
        thresholds = entries.pop("thresholds")
        section.update(entries)
        section["thresholds"] = {**section.get("thresholds", {}), **thresholds}
        calibration = dict(section.get("calibration", {})) if result is not None else {}
        calibration["operating_point"] = evidence
        calibration.setdefault("seed", operating_point.seed)
        calibration["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        section["calibration"] = calibration
    return section


def write_scoring_section(folder: str | Path, section: dict, provenance: dict[str, dict] | None = None) -> Path:
    """Replace the ``"scoring"`` section of the bundle at ``folder`` in place (and the ``provenance`` entries
    given, e.g. the recipe's record of which sources chose the operating point, in the same write): only
    ``model.json`` is rewritten (atomically); weights and every other file of the folder (the model card) stay."""
    bundle = load_bundle(folder)  # a valid bundle, weights verified
    path = Path(folder) / DESCRIPTION_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    document[SCORING_SECTION] = section
    document.setdefault("provenance", {}).update(provenance or {})
    atomic_write_text(path, json.dumps(document, indent=2, allow_nan=False) + "\n", overwrite=True)
    del bundle
    return Path(folder)


def _rescored(volume: VolumeScores, scorer: AnomalyScorer, beta: float) -> np.ndarray:
    """AS of a scored volume with weight ``beta`` (the networks are not run again): ``[Z, Y, X]``."""
    if not 0.0 <= beta <= 1.0:
        raise InputError(None, f"beta must be in [0, 1], got {beta}")
    probability = None if volume.segmentation_probability is None else torch.from_numpy(volume.segmentation_probability)
    config = dataclasses.replace(scorer.config, beta=beta)
    return combined_score(torch.from_numpy(volume.reconstruction_term), probability,
                          torch.from_numpy(volume.mask), config).numpy()


def apply_calibration(bundle: ModelBundle, result: CalibrationResult) -> ModelBundle:
    """A copy of ``bundle`` whose ``"scoring"`` section carries the calibration."""
    calibrated = bundle.derive()
    section = dict(calibrated.description.get(SCORING_SECTION, {}))
    section.update(result.to_scoring_entries())
    calibrated.description[SCORING_SECTION] = section
    return calibrated


def calibrate_bundle(
    model: str | Path,
    validation: str | Path | None,
    healthy: str | Path | None = None,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
    rates: Sequence[float] = DEFAULT_FPR_RATES,
    beta_candidates: Sequence[float] = (),
    rule: SearchRule | None = None,
) -> tuple[Path, CalibrationResult | None, OperatingPointCalibration | None]:
    """``anomalyseg calibrate``: calibrate the bundle ``model`` and write it (in place, or to ``out``).

    ``validation`` (labelled cases): the pooled-voxel threshold and β; ``healthy`` with ``rule``: the
    operating point (threshold and clean-up) and the FPR presets on those held-out healthy cases. In place,
    only ``model.json`` is rewritten (other files of the folder, e.g. the model card, stay).

    Returns the written bundle folder and the results.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        InputError: bad case folders (e.g. validation cases without labels), or nothing to calibrate on.
        ModelBundleError: ``model`` is not a valid bundle.
    """
    target = Path(out) if out is not None else Path(model)
    if out is not None and target.exists() and not overwrite:
        raise OutputExistsError(target)
    if validation is None and (healthy is None or rule is None):
        raise InputError(None, "nothing to calibrate on: give --val and/or --healthy")
    bundle = load_bundle(model)
    scorer = AnomalyScorer.from_bundle(bundle, device, precision)
    result = None
    if validation is not None:
        validation_cases = load_case_folder(validation, need_labels=True)
        plain_healthy = load_case_folder(healthy, need_labels=False) if healthy is not None and rule is None else []
        result = calibrate(scorer, validation_cases, plain_healthy, rates, seed, beta_candidates)
        if result.beta is not None:
            scorer = AnomalyScorer(scorer.reconstructor, scorer.seg_network,
                                   dataclasses.replace(scorer.config, beta=result.beta))
    operating_point = None
    if healthy is not None and rule is not None:
        grid = PreprocessingSpec.from_dict(bundle.description.get("preprocessing", {})).grid
        operating_point = calibrate_operating_point(scorer, load_case_folder(healthy, need_labels=False), rule,
                                                    voxel_size_zyx(grid.spacing), rates, seed)
    section = scoring_section_with(bundle.description.get(SCORING_SECTION, {}), result, operating_point)
    if out is None:
        return write_scoring_section(target, section), result, operating_point
    calibrated = bundle.derive()
    calibrated.description[SCORING_SECTION] = section
    return save_bundle(calibrated, target, overwrite=overwrite), result, operating_point


def describe(result: CalibrationResult) -> str:
    """A few human-readable lines about a calibration."""
    lines = [
        f"threshold {result.threshold:.6g}: Dice {result.validation_dice:.4f} on the pooled voxels of "
        f"{len(result.validation_cases)} validation volume(s)"
    ]
    if result.beta is not None:
        searched = ", ".join(f"{beta:g}: {value:.4f}" for beta, value in result.beta_search.items())
        lines.append(f"beta {result.beta:g} chosen (pooled validation Dice per beta: {searched})")
    for case_id, metrics in result.per_case.items():
        lines.append(
            f"  {case_id}: Dice {metrics['dice']:.4f}, best Dice {metrics['best_dice']:.4f}, "
            f"AUPRC {metrics['auprc']:.4f}"
        )
    for preset, value in result.healthy_thresholds.items():
        lines.append(f"healthy voxel FPR {preset.removeprefix('fpr')} %: threshold {value:.6g}")
    return "\n".join(lines)

