#!/usr/bin/env python
"""Choose the bundled default model's operating point (threshold + clean-up) again, same weights.

Only the ``"scoring"`` section of ``Resources/Models/default/model.json`` changes (the weights, the model
card and every other file stay). The rule is :mod:`AnomalySegLib.operating_point_search` (the same as
``anomalyseg calibrate --healthy``), on the variant-bank cases of the subjects the model never trained on
that its recipe set aside for calibration (``provenance.default_model.calibration_sources``, written by
``scripts/train_default_model.py``): every variant as it is and lesioned copies of it. The recipe's
``test_sources`` are kept out of every choice so that the benchmarks can report them as unseen;
MRBrainTumor1/2 are never used.

Usage::

    python scripts/calibrate_default_model.py --cache work/ [--model Resources/Models/default] [--threads 2]
    # or score the variants in parallel processes first (cached), then choose:
    python scripts/calibrate_default_model.py --cache work/ --score-only itk_kmeans_t1_v000 itk_kmeans_t1_v001 &
    python scripts/calibrate_default_model.py --cache work/ --score-only itk_kmeans_t1_v002 ... &
    wait; python scripts/calibrate_default_model.py --cache work/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from AnomalySegLib.augmentation.variant_bank import DEFAULT_BANK, SOURCES, bank_root, load_variants
from AnomalySegLib.bundle import ModelBundle, load_bundle
from AnomalySegLib.calibration import (
    PORTABLE_PRECISION,
    OperatingPointCalibration,
    describe_operating_point,
    fpr_preset,
    scoring_section_with,
    write_scoring_section,
)
from AnomalySegLib.operating_point_search import SearchRule, lesioned_copies, search_operating_point
from AnomalySegLib.scoring.thresholds import fpr_thresholds
from AnomalySegLib.pipeline import default_model_path
from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.recipe_record import recipe_record, record_update, trained_sources
from AnomalySegLib.scoring.operating_point import voxel_size_zyx
from AnomalySegLib.scoring.volume import AnomalyScorer

NEVER = ("mrbraintumor1", "mrbraintumor2")


def pooled_split(bundle: ModelBundle, calibration: list[str]) -> tuple[list[str], list[str]]:
    """``(calibration, test)`` when the operating point is chosen on ``calibration`` instead of the recorded
    sources (pooled over several subjects: an operating point chosen on one subject's variants did not
    transfer to others, BENCHMARKS.md "generalization-diagnosis"): the recorded test sources less those now
    used for a choice.

    Raises:
        SystemExit: a source was trained on, or is a tumour case.
    """
    trained = trained_sources(bundle.description) or []
    for name in calibration:
        if name in trained or name in NEVER:
            raise SystemExit(f"{name} was used for training or is a test case: not a calibration source")
    _, test = default_model_split(bundle)
    return list(calibration), [name for name in test if name not in calibration]


def default_model_split(bundle: ModelBundle) -> tuple[list[str], list[str]]:
    """``(calibration_sources, test_sources)``: the healthy subjects the model never trained on that chose its
    operating point, and those kept out of every choice.

    Read from ``provenance.default_model`` (written by ``scripts/train_default_model.py``); for a bundle made
    before the recipe recorded them, from its operating point's record (``scoring.calibration.operating_point``:
    the healthy cases it was chosen on and the untouched scans).

    Raises:
        SystemExit: the bundle records neither, or a calibration source was trained on.
    """
    recipe, trained = recipe_record(bundle.description), trained_sources(bundle.description) or []
    if "calibration_sources" in recipe:
        calibration, test = list(recipe["calibration_sources"]), list(recipe["test_sources"])
    else:
        record = bundle.description.get("scoring", {}).get("calibration", {}).get("operating_point", {})
        if "healthy_cases" not in record:
            raise SystemExit("the bundle records no calibration sources (provenance.default_model) and no operating "
                             "point record: train it with scripts/train_default_model.py")
        calibration = [case.removeprefix("heldout_") for case in record["healthy_cases"]]
        test = list(record.get("untouched_healthy_scans", []))
    for name in calibration:
        if name in trained or name in NEVER:
            raise SystemExit(f"{name} was used for training or is a test case: not a calibration source")
    return calibration, test


def score_case(scorer: AnomalyScorer, case: ModelSpaceCase, index: int, rule: SearchRule, spec: PreprocessingSpec,
               cache: Path) -> Path:
    """Score one calibration case and its lesioned copies (seeded by ``index``); save the arrays in ``cache``."""
    target = cache / f"{case.case_id}.npz"
    if target.is_file():
        return target
    copies, inventory = lesioned_copies([case], rule, voxel_size_zyx(spec.grid.spacing), case_indices=[index])
    arrays = {"healthy": scorer.score(case.image, case.mask).anomaly_score, "mask": case.mask}
    for n, copy in enumerate(copies):
        logging.info("scoring %s", copy.case_id)
        arrays[f"lesion{n}"] = scorer.score(copy.image, copy.mask).anomaly_score
        arrays[f"labels{n}"] = copy.labels
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache / f".{case.case_id}.npz", **arrays)
    (cache / f".{case.case_id}.npz").rename(target)
    (cache / f"{case.case_id}.json").write_text(json.dumps(inventory), encoding="utf-8")
    return target


def choose(cache: Path, case_ids: list[str], rule: SearchRule, spec: PreprocessingSpec) -> OperatingPointCalibration:
    """The operating point from the cached scores of every calibration case (the rule of
    :func:`AnomalySegLib.calibration.calibrate_operating_point`, split so the cases can be scored in parallel)."""
    healthy, lesion_scores, lesion_labels, lesion_ids, inventory, in_brain = {}, [], [], [], {}, []
    for case_id in case_ids:
        arrays = np.load(cache / f"{case_id}.npz")
        healthy[case_id] = arrays["healthy"]
        in_brain.append(arrays["healthy"][arrays["mask"]])
        for n in range(rule.lesion_copies):
            lesion_scores.append(arrays[f"lesion{n}"])
            lesion_labels.append(arrays[f"labels{n}"])
            lesion_ids.append(f"{case_id}_lesions{n}")
        inventory.update(json.loads((cache / f"{case_id}.json").read_text(encoding="utf-8")))
    search = search_operating_point(lesion_scores, lesion_labels, healthy, voxel_size_zyx(spec.grid.spacing), rule,
                                    lesion_ids)
    search.lesion_inventory = inventory
    presets = {fpr_preset(rate): value for rate, value in fpr_thresholds(np.concatenate(in_brain)).items()}
    return OperatingPointCalibration(search, rule, presets, list(healthy), seed=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--bank", type=Path, default=DEFAULT_BANK, help="the variant bank (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, required=True, help="scored calibration cases (npz)")
    parser.add_argument("--score-only", nargs="+", metavar="CASE", help="only score these bank cases into --cache")
    parser.add_argument("--calibration-sources", nargs="+", choices=sorted(SOURCES), metavar="SOURCE",
                        help="choose on these bank sources, pooled (default: the recipe's calibration sources); "
                             "recorded in provenance.default_model, and dropped from its test sources")
    parser.add_argument("--dry-run", action="store_true", help="print the result; leave the bundle alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model)
    calibration_sources, test_sources = (pooled_split(bundle, args.calibration_sources) if args.calibration_sources
                                         else default_model_split(bundle))
    spec = PreprocessingSpec.from_dict(bundle.description["preprocessing"])
    cases = load_variants(bank_root(args.bank, spec), calibration_sources)
    case_ids = [case.case_id for case in cases]
    unknown = sorted(set(args.score_only or ()) - set(case_ids))
    if unknown:
        raise SystemExit(f"not a calibration case of this bank: {', '.join(unknown)} (known: {', '.join(case_ids)})")
    rule = SearchRule()
    scorer = AnomalyScorer.from_bundle(bundle, device="cpu", precision=PORTABLE_PRECISION)
    for index, case in enumerate(cases):
        if not args.score_only or case.case_id in args.score_only:
            score_case(scorer, case, index, rule, spec, args.cache)
    if args.score_only:
        return 0
    result = choose(args.cache, case_ids, rule, spec)
    print(describe_operating_point(result))
    old = bundle.description["scoring"]
    section = scoring_section_with(old, None, result)
    previous = old.get("calibration", {})
    section["calibration"]["operating_point"]["untouched_healthy_scans"] = test_sources
    if "beta_search" in previous:  # β stays; keep the evidence it was chosen on
        section["calibration"]["beta_search"] = {**previous["beta_search"],
                                                 "validation_cases": previous.get("validation_cases", [])}
    section["calibration"]["previous_thresholds"] = old.get("thresholds", {})
    if args.dry_run:
        print(json.dumps(section, indent=2))
        return 0
    recipe = recipe_record(bundle.description)
    provenance = (record_update({**recipe, "calibration_sources": calibration_sources, "test_sources": test_sources})
                  if recipe else None)
    print(write_scoring_section(args.model, section, provenance))
    return 0

if __name__ == "__main__":
    sys.exit(main())
