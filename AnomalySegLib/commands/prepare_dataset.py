"""``anomalyseg prepare-dataset``: IXI, BraTS21, ATLAS v2, MSLUB or WMH into case folders + 5-fold splits."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.cli_common import exit_status
from AnomalySegLib.datasets.layouts import LAYOUTS
from AnomalySegLib.choices import BRAIN_MASK_METHODS, SPLIT_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare-dataset",
        help="preprocess a public dataset (IXI, BraTS21, ATLAS v2, MSLUB, WMH) and write seeded splits",
        description="Find the T1 images (and label maps) of a dataset in its published layout under SRC, "
        "preprocess each into OUT/cases/<case_id>/ and write OUT/splits.json (seeded folds with train/val/"
        "test and a small labelled subset) and OUT/dataset.json. Re-running resumes: prepared cases are "
        "kept. Datasets: " + "; ".join(f"{name}: {layout.description}" for name, layout in LAYOUTS.items()),
    )
    parser.add_argument("name", choices=sorted(LAYOUTS), metavar="NAME", help=", ".join(sorted(LAYOUTS)))
    parser.add_argument("source", type=Path, metavar="SRC", help="the unpacked dataset's root folder")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output folder")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")
    parser.add_argument("--labelled-fraction", type=float, default=0.1,
                        help="share of the cases in the labelled subset (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="only the first N cases (by id)")
    parser.add_argument("--splits", choices=SPLIT_KINDS, default="seeded",
                        help="'seeded': seeded folds per dataset; 'paper': the authors' published lists (ixi, "
                        "brats21, atlas2), with OUT/folds/fold<k>/<subset>/ links to the case folders "
                        "(default: %(default)s)")
    parser.add_argument("--brain-extraction", choices=BRAIN_MASK_METHODS,
                        help="brain mask of skull-on scans: 'template' (the template's mask through the affine "
                        "registration) or 'learned' (deepbet; pip install 'anomalyseg[brain]'); default: the "
                        "spec's")
    parser.add_argument("--spec", type=Path, metavar="S", help="preprocessing spec JSON (default: the paper's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="re-preprocess existing cases and replace differing splits.json/dataset.json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.datasets import prepare_dataset
    from AnomalySegLib.preprocessing.spec import PreprocessingSpec, read_spec, with_brain_mask_method

    spec = read_spec(args.spec) if args.spec else PreprocessingSpec()
    if args.brain_extraction:
        spec = with_brain_mask_method(spec, args.brain_extraction)
    result = prepare_dataset(args.name, args.source, args.output, folds=args.folds, seed=args.seed,
                             labelled_fraction=args.labelled_fraction, limit=args.limit, spec=spec,
                             overwrite=args.overwrite, splits=args.splits)
    print(f"{result.root}: {len(result.prepared)} cases prepared, {len(result.skipped)} kept, "
          f"{len(result.report.failed)} failed")
    return exit_status(result.report.all_ok)
