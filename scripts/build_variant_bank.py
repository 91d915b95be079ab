#!/usr/bin/env python
"""Build a bank of simulated acquisitions of the healthy sources, preprocessed into model space (issue #13).

For each healthy source volume (:data:`AnomalySegLib.augmentation.variant_bank.SOURCES`, fetched from the registries by :mod:`AnomalySegLib.sample_data`)
the bank holds ``v000`` (the scan as it is) and ``--variants`` simulated re-acquisitions
(:func:`AnomalySegLib.augmentation.acquisition.simulate_acquisition` with parameters drawn by
:func:`~AnomalySegLib.augmentation.acquisition.sample_acquisition`: slices 1–7 mm, in-plane 0.8–1.5 mm, noise,
bias field, gamma, contrast-enhanced look with the dura and sinuses, rotation/scaling/elastic). Population templates
(``TEMPLATES``) get a third as many variants, so that single-subject scans are the majority. Every
variant goes through the REAL preprocessing (:func:`~AnomalySegLib.preprocessing.pipeline.preprocess_image`:
registration, N4, resampling, denoising, rescaling) exactly as ``segment`` does on a scan without a brain
mask, and is written as a case folder (:mod:`AnomalySegLib.preprocessing.case_folder`)::

    <out>/<spec key>-a<version>/<source>/<source>_v003/{image,mask}.nii.gz, transform.tfm, preprocessing.json

``preprocessing.json`` → ``info.acquisition`` holds the simulation parameters and seed (a variant can be
re-simulated bit for bit). The spec key is a hash of the preprocessing spec (the recipe's, or ``--model``'s
bundle's, on ``--grid``) and the version is :data:`~AnomalySegLib.augmentation.variant_bank.SIMULATION_VERSION` (the simulation's), so a
model with another grid, or a new simulation, gets its own bank. Finished variants are skipped (case folders are written
atomically), so an interrupted run resumes; a failing variant is logged and the run goes on.

Usage (background, one thread, low priority)::

    nohup nice -n 10 python scripts/build_variant_bank.py --variants 8 > variant_bank.log 2>&1 &
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

from AnomalySegLib.augmentation.variant_bank import (BASE_SEED, DEFAULT_BANK, RECIPE_GRID, SOURCES, VARIANTS_PER_SCAN,
                                                     bank_root, recipe_spec, simulated_variant, variant_count,
                                                     variant_folder)
from AnomalySegLib.preprocessing.spec import MODEL_GRIDS

LOG = logging.getLogger("build_variant_bank")

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_BANK, help="bank folder (default: %(default)s)")
    parser.add_argument("--variants", type=int, default=VARIANTS_PER_SCAN,
                        help="simulated acquisitions per single-subject source")
    parser.add_argument("--sources", nargs="+", choices=sorted(SOURCES), default=list(SOURCES))
    parser.add_argument("--model", default=None,
                        help="preprocess as this bundle records it (default: the default model's recipe, "
                             "variant_bank.recipe_spec)")
    parser.add_argument("--grid", choices=sorted(MODEL_GRIDS), default=None,
                        help="model grid (preprocessing/spec.py MODEL_GRIDS; default: the bundle's with --model, "
                             "else the recipe's)")
    parser.add_argument("--seed", type=int, default=BASE_SEED, help="base seed of the simulations")
    parser.add_argument("--threads", type=int, default=1, help="threads for SimpleITK/torch (default 1)")
    return parser.parse_args(argv)


def build_variant(source: str, index: int, folder: Path, spec, base_seed: int) -> dict:
    """Simulate (index > 0) and preprocess one variant into ``folder``; returns its summary."""
    from AnomalySegLib.preprocessing.case_folder import write_case
    from AnomalySegLib.preprocessing.pipeline import preprocess_image

    start = time.perf_counter()
    acquired, acquisition = simulated_variant(source, index, base_seed)
    simulate_s = time.perf_counter() - start
    case = preprocess_image(acquired, spec=spec, image_path=f"{source} variant {index}")
    case.info["acquisition"] = {"source": source, "sample_data": SOURCES[source][0], **acquisition}
    write_case(case, folder)
    return {"simulate_s": round(simulate_s, 2), "preprocess_s": round(sum(case.info["timings_s"].values()), 2),
            "mask_source": case.info["mask_source"], "registration_metric": case.info["registration"]["metric"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import SimpleITK as sitk
    import torch

    from AnomalySegLib.bundle import load_bundle
    from AnomalySegLib.preprocessing.spec import PreprocessingSpec

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    torch.set_num_threads(args.threads)
    if args.model is None:
        spec = recipe_spec(args.grid or RECIPE_GRID)
    else:
        spec = PreprocessingSpec.from_dict(load_bundle(Path(args.model)).description.get("preprocessing", {}))
        if args.grid is not None:
            spec = dataclasses.replace(spec, grid=MODEL_GRIDS[args.grid])
    root = bank_root(args.out, spec)
    root.mkdir(parents=True, exist_ok=True)
    (root / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n", encoding="utf-8")
    LOG.info("bank %s (%d variants per scan, sources: %s)", root, args.variants, ", ".join(args.sources))
    started, built, skipped, failed = time.perf_counter(), 0, 0, 0
    for index in range(variant_count("", args.variants) + 1):  # round-robin: every source gets variants early
        for source in args.sources:
            if index > variant_count(source, args.variants):
                continue
            folder = variant_folder(root, source, index)
            if folder.is_dir():
                skipped += 1
                continue
            try:
                summary = build_variant(source, index, folder, spec, args.seed)
            except Exception as error:  # noqa: BLE001 - a batch goes on past a failing variant
                failed += 1
                LOG.error("%s v%03d failed: %s", source, index, error)
                continue
            built += 1
            LOG.info("%s v%03d: %s", source, index, json.dumps(summary))
    elapsed = time.perf_counter() - started
    total = sum(1 for _ in root.glob("*/*/image.nii.gz"))
    LOG.info("done in %.0f s: %d built, %d already there, %d failed; %d variants in the bank", elapsed, built,
             skipped, failed, total)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
