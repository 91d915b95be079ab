#!/usr/bin/env python
"""Measure a model bundle's training and validation scans and write the bundle's ``"domain"`` section.

The scans are the ones its provenance names, or ``--scans``; they are preprocessed with the bundle's own
preprocessing spec. For a model of the default recipe (``provenance.default_model``), they are what it was
trained and calibrated on: every variant of the variant bank of its training and calibration sources, the
scans as they are and their simulated re-acquisitions (re-simulated bit for bit,
:func:`~AnomalySegLib.augmentation.variant_bank.simulated_variant`), so thick slices it was trained on are
in its domain. Otherwise ``anomalyseg fetch-data`` names (e.g. ``train_mrhead`` → ``mrhead``). Only
``model.json``'s ``"domain"`` entry changes; the bundle is loaded afterwards to check the checksums.

Usage::

    python scripts/domain_reference.py Resources/Models/default
    python scripts/domain_reference.py BUNDLE --scans mrhead colin27_t1 --validation itk_kmeans_t1 --dry-run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from AnomalySegLib import sample_data
from AnomalySegLib.augmentation.variant_bank import (SIMULATION_VERSION, bank_simulation_version, parse_variant_id,
                                                     simulated_variant, variant_id, variant_names)
from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.io.atomic import atomic_write_text
from AnomalySegLib.io.volume_io import read_volume
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.quality.reference import (domain_section, measure_scans, provenance_volumes,
                                             write_domain_section)
from AnomalySegLib.recipe_record import recipe_record


def reference_scans(description: dict, bundle_name: str = "the model") -> tuple[list[str], list[str]]:
    """``(training, validation)`` scan names of a bundle (``bundle_name`` names it in the refusal): for the
    default recipe every bank variant of its training and calibration sources (:func:`variant_id` names), else
    its Stage I provenance."""
    recipe = recipe_record(description)
    if "training_sources" not in recipe:
        return provenance_volumes(description)
    trained_on = bank_simulation_version(recipe.get("variant_bank", {}).get("spec_key", ""))
    if trained_on != SIMULATION_VERSION:
        raise SystemExit(f"{bundle_name} trained on variants of simulation version {trained_on}, today's simulation "
                         f"is version {SIMULATION_VERSION}: re-simulated variants would not be the ones it saw")
    return ([variant_id(*v) for v in variant_names(recipe["training_sources"])],
            [variant_id(*v) for v in variant_names(recipe["calibration_sources"])])


def scan(name: str) -> sitk.Image:
    """A fetch-data scan, or a bank variant by its :func:`variant_id`."""
    variant = parse_variant_id(name)
    return simulated_variant(*variant)[0] if variant else read_volume(sample_data.fetch(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="model bundle folder (holds model.json)")
    parser.add_argument("--scans", nargs="+", help="training scans (fetch-data names); default: provenance")
    parser.add_argument("--validation", nargs="*", help="validation scans; default: provenance")
    parser.add_argument("--dry-run", action="store_true", help="print the section, write nothing")
    parser.add_argument("--measurements", type=Path,
                        help="JSON file keeping the scans' measures and histograms: read if it exists, else "
                             "written (to change the limit rules without preprocessing again)")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)
    training, validation = reference_scans(bundle.description, str(args.bundle))
    training = args.scans or training
    validation = validation if args.validation is None else args.validation
    if not training:
        parser.error(f"{args.bundle}: no training scans in its provenance; name them with --scans")
    if args.measurements is not None and args.measurements.is_file():
        stored = json.loads(args.measurements.read_text(encoding="utf-8"))
        measures = stored["measures"]
        histograms = {name: np.asarray(values) for name, values in stored["histograms"].items()}
    else:
        spec = PreprocessingSpec.from_dict(bundle.description.get("preprocessing", {}))
        measures, histograms = {}, {}
        for name in (*training, *validation):  # one at a time: a bank holds dozens of full-size volumes
            measured = measure_scans({name: scan(name)}, spec)
            measures.update(measured[0])
            histograms.update(measured[1])
        if args.measurements is not None:
            stored = {"measures": measures, "histograms": {k: v.tolist() for k, v in histograms.items()}}
            atomic_write_text(args.measurements, json.dumps(stored), overwrite=False)
    section = domain_section(measures, histograms, training, validation)
    print(json.dumps(section, indent=2))
    if not args.dry_run:
        print(f"wrote {write_domain_section(args.bundle, section)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
