"""``anomalyseg calibrate``: Dice-optimal and healthy-FPR thresholds, written into the model bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.choices import DEFAULT_FPR_RATES
from AnomalySegLib.cli_common import add_compute_options, add_seed_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose the anomaly threshold on labelled validation volumes (and healthy-set FPR thresholds)",
        description="Score labelled validation cases (preprocessed, with labels.nii.gz) with the model, "
        "find the threshold that maximises Dice over their pooled voxels (bisection, as in the paper's "
        "code) and, with --healthy, the thresholds at 1/5/10 % voxel false-positive rate on healthy "
        "cases. The thresholds and what they were computed on are written into the bundle's 'scoring' "
        "section (in place, or into a new bundle with --out).",
    )
    parser.add_argument("--model", type=Path, required=True, help="model bundle (Stage I + Stage II)")
    parser.add_argument("--val", type=Path, required=True, help="folder of preprocessed labelled cases")
    parser.add_argument("--healthy", type=Path, help="folder of preprocessed healthy cases")
    parser.add_argument("--out", type=Path, help="write the calibrated bundle here instead of updating --model")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument(
        "--fpr", type=float, nargs="+", default=list(DEFAULT_FPR_RATES), metavar="RATE",
        help="voxel false-positive rates for the healthy thresholds (default: %(default)s)",
    )
    parser.add_argument(
        "--beta", type=float, nargs="+", default=[], metavar="BETA",
        help="choose the reconstruction term's weight in the anomaly score among these values (in [0, 1]) "
        "by pooled validation Dice (default: keep the bundle's)",
    )
    add_seed_option(parser)
    add_compute_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.calibration import calibrate_bundle, describe
    from AnomalySegLib.device import set_cpu_threads

    set_cpu_threads(args.threads)
    written, result = calibrate_bundle(
        args.model, args.val, args.healthy, args.out,
        overwrite=args.overwrite, device=args.device, precision=args.precision, seed=args.seed,
        rates=tuple(args.fpr), beta_candidates=tuple(args.beta),
    )
    print(describe(result))
    print(written)
    return 0
