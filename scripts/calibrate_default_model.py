#!/usr/bin/env python
"""Choose the bundled default model's operating point (threshold + clean-up) again, same weights.

Only the ``"scoring"`` section of ``Resources/Models/default/model.json`` changes (the weights, the model
card and every other file stay). The rule is :mod:`AnomalySegLib.operating_point_search` (the same as
``anomalyseg calibrate --healthy``), on held-out healthy scans the model never trained on:
:data:`CALIBRATION_SCANS` (and lesioned copies of them). :data:`UNTOUCHED_SCANS` are kept out of every
choice so that ``benchmarks/operating_point.py`` can report them as unseen; MRBrainTumor1/2 are never used.

Usage::

    python scripts/calibrate_default_model.py [--model Resources/Models/default] [--threads 2]
    # or score the scans in parallel processes first (cached), then choose:
    python scripts/calibrate_default_model.py --cache work/ --score-only itk_kmeans_t1 &
    python scripts/calibrate_default_model.py --cache work/ --score-only someones_anatomy &
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

from AnomalySegLib import sample_data
from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.calibration import (
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
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.scoring.operating_point import voxel_size_zyx
from AnomalySegLib.scoring.volume import AnomalyScorer

#: Held-out real single-subject healthy scans used to choose the operating point.
CALIBRATION_SCANS = ("itk_kmeans_t1", "someones_anatomy")
#: Held-out healthy scans kept out of every choice (reported by benchmarks/operating_point.py).
UNTOUCHED_SCANS = ("robex_atlas_t1", "nibabel_anatomical")
NEVER = ("mrbraintumor1", "mrbraintumor2")


def score_scan(scorer: AnomalyScorer, spec: PreprocessingSpec, name: str, rule: SearchRule, cache: Path) -> Path:
    """Preprocess one calibration scan, score it and its lesioned copies; save the arrays in ``cache``."""
    target = cache / f"{name}.npz"
    if target.is_file():
        return target
    index = CALIBRATION_SCANS.index(name)
    image, mask, _ = preprocess_file(sample_data.fetch(name), spec=spec).arrays()
    case = ModelSpaceCase(f"heldout_{name}", image, mask, None)
    copies, inventory = lesioned_copies([case], rule, voxel_size_zyx(spec.grid.spacing), case_indices=[index])
    arrays = {"healthy": scorer.score(image, mask).anomaly_score, "mask": mask}
    for n, copy in enumerate(copies):
        logging.info("scoring %s", copy.case_id)
        arrays[f"lesion{n}"] = scorer.score(copy.image, copy.mask).anomaly_score
        arrays[f"labels{n}"] = copy.labels
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache / f".{name}.npz", **arrays)
    (cache / f".{name}.npz").rename(target)
    (cache / f"{name}.json").write_text(json.dumps(inventory), encoding="utf-8")
    return target


def choose(cache: Path, rule: SearchRule, spec: PreprocessingSpec) -> OperatingPointCalibration:
    """The operating point from the cached scores of every calibration scan (the rule of
    :func:`AnomalySegLib.calibration.calibrate_operating_point`, split so the scans can be scored in parallel)."""
    healthy, lesion_scores, lesion_labels, lesion_ids, inventory, in_brain = {}, [], [], [], {}, []
    for name in CALIBRATION_SCANS:
        arrays = np.load(cache / f"{name}.npz")
        healthy[f"heldout_{name}"] = arrays["healthy"]
        in_brain.append(arrays["healthy"][arrays["mask"]])
        for n in range(rule.lesion_copies):
            lesion_scores.append(arrays[f"lesion{n}"])
            lesion_labels.append(arrays[f"labels{n}"])
            lesion_ids.append(f"heldout_{name}_lesions{n}")
        inventory.update(json.loads((cache / f"{name}.json").read_text(encoding="utf-8")))
    search = search_operating_point(lesion_scores, lesion_labels, healthy, voxel_size_zyx(spec.grid.spacing), rule,
                                    lesion_ids)
    search.lesion_inventory = inventory
    presets = {fpr_preset(rate): value for rate, value in fpr_thresholds(np.concatenate(in_brain)).items()}
    return OperatingPointCalibration(search, rule, presets, list(healthy), seed=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, required=True, help="scored calibration scans (npz)")
    parser.add_argument("--score-only", choices=CALIBRATION_SCANS, help="only score this scan into --cache")
    parser.add_argument("--dry-run", action="store_true", help="print the result; leave the bundle alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model)
    training = set(bundle.description["provenance"]["default_model"]["training_volumes"])
    for name in CALIBRATION_SCANS:
        if name in training or name in NEVER:
            raise SystemExit(f"{name} was used for training or is a test case: not a calibration scan")
    spec = PreprocessingSpec.from_dict(bundle.description["preprocessing"])
    rule = SearchRule()
    scorer = AnomalyScorer.from_bundle(bundle, device="cpu")
    for name in [args.score_only] if args.score_only else CALIBRATION_SCANS:
        score_scan(scorer, spec, name, rule, args.cache)
    if args.score_only:
        return 0
    result = choose(args.cache, rule, spec)
    print(describe_operating_point(result))
    old = bundle.description["scoring"]
    section = scoring_section_with(old, None, result)
    previous = old.get("calibration", {})
    section["calibration"]["operating_point"]["untouched_healthy_scans"] = list(UNTOUCHED_SCANS)
    if "beta_search" in previous:  # β stays; keep the evidence it was chosen on
        section["calibration"]["beta_search"] = {**previous["beta_search"],
                                                 "validation_cases": previous.get("validation_cases", [])}
    section["calibration"]["previous_thresholds"] = old.get("thresholds", {})
    if args.dry_run:
        print(json.dumps(section, indent=2))
        return 0
    print(write_scoring_section(args.model, section))
    return 0

if __name__ == "__main__":
    sys.exit(main())
