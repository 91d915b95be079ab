"""``anomalyseg make-draem-test-set``: the seeded DRAEM-synthetic IXI test set of the paper's Table 1."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.choices import DRAEM_TEST_SET_SEED


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-draem-test-set",
        help="add seeded DRAEM anomalies to preprocessed healthy cases (the paper's IXI DRAEM test set)",
        description="For every case folder under SRC (e.g. OUT/folds/fold0/test of 'prepare-dataset ixi "
        "--splits paper'), write a labelled case folder under -o with DRAEM anomalies in every brain slice. "
        "The anomalies depend only on --seed and the case id: the same set on every machine.",
    )
    parser.add_argument("source", type=Path, metavar="SRC", help="folder of preprocessed healthy case folders")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output folder")
    parser.add_argument("--seed", type=int, default=DRAEM_TEST_SET_SEED, help="seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case folders in OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.datasets.draem_test_set import make_draem_test_set

    written = make_draem_test_set(args.source, args.output, seed=args.seed, overwrite=args.overwrite)
    print(f"{args.output}: {len(written)} DRAEM test cases (seed {args.seed})")
    return 0
