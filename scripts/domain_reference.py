#!/usr/bin/env python
"""Measure a model bundle's training and validation scans and write the bundle's ``"domain"`` section.

The scans are the ones its provenance names (``anomalyseg fetch-data`` names, e.g. ``train_mrhead`` →
``mrhead``), or ``--scans``; they are preprocessed with the bundle's own preprocessing spec. Only
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

from AnomalySegLib import sample_data
from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.io.atomic import atomic_write_text
from AnomalySegLib.io.volume_io import read_volume
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.quality.reference import (domain_section, measure_scans, provenance_volumes,
                                             write_domain_section)


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
    training, validation = provenance_volumes(bundle.description)
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
        scans = {name: read_volume(sample_data.fetch(name)) for name in (*training, *validation)}
        measures, histograms = measure_scans(scans, spec)
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
