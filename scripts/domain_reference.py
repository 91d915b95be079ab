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

from AnomalySegLib import sample_data
from AnomalySegLib.bundle import load_bundle
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
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)
    training, validation = provenance_volumes(bundle.description)
    training = args.scans or training
    validation = validation if args.validation is None else args.validation
    if not training:
        parser.error(f"{args.bundle}: no training scans in its provenance; name them with --scans")
    spec = PreprocessingSpec.from_dict(bundle.description.get("preprocessing", {}))
    scans = {name: read_volume(sample_data.fetch(name)) for name in (*training, *validation)}
    measures, histograms = measure_scans(scans, spec)
    section = domain_section(measures, histograms, training, validation)
    print(json.dumps(section, indent=2))
    if not args.dry_run:
        print(f"wrote {write_domain_section(args.bundle, section)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
