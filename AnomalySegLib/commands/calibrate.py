"""``anomalyseg calibrate``: the operating point (threshold + clean-up) and healthy-FPR thresholds, written
into the model bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.choices import DEFAULT_FPR_RATES
from AnomalySegLib.cli_common import add_compute_options, add_seed_option
from AnomalySegLib.operating_point_search import SearchRule

_RULE = SearchRule()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose the operating point (threshold and clean-up) and the healthy-set FPR thresholds",
        description="With --healthy (preprocessed healthy cases the model never trained on): score them "
        "and --lesion-copies copies of each with 3D lesion-like anomalies (bright and dark, 0.5-30 ml), and "
        "choose the threshold, rim erosion, median and minimum finding size (the 'val' operating point) "
        "with the best mean lesion Dice among those flagging at most --max-healthy-ml and "
        "--max-healthy-findings on every unchanged healthy case; the 1/5/10 % voxel false-positive-rate "
        "thresholds come from the same healthy cases. With --val (labelled cases): the threshold that "
        "maximises Dice over their pooled voxels (bisection, the paper's code; replaced by the operating "
        "point when --healthy is given) and, with --beta, the score weight. Everything and what it was "
        "computed on is written into the bundle's 'scoring' section (in place: model.json only; or into a "
        "new bundle with --out).",
    )
    parser.add_argument("--model", type=Path, required=True, help="model bundle (Stage I + Stage II)")
    parser.add_argument("--val", type=Path, help="folder of preprocessed labelled cases")
    parser.add_argument("--healthy", type=Path,
                        help="folder of preprocessed healthy cases the model never trained on")
    parser.add_argument("--lesion-copies", type=int, default=_RULE.lesion_copies, metavar="N",
                        help="lesioned copies of each healthy case for the operating point; 0: no operating-point "
                        "search (default: %(default)s)")
    parser.add_argument("--max-healthy-ml", type=float, default=_RULE.max_healthy_ml, metavar="ML",
                        help="most flagged volume allowed on each healthy case (default: %(default)s)")
    parser.add_argument("--max-healthy-findings", type=int, default=_RULE.max_healthy_findings, metavar="N",
                        help="most findings allowed on each healthy case (default: %(default)s)")
    parser.add_argument("--rim-erosion-mm", type=float, nargs="+", default=list(_RULE.rim_erosion_mm), metavar="MM",
                        help="candidate brain-rim erosions (default: %(default)s)")
    parser.add_argument("--median-mm", type=float, nargs="+", default=list(_RULE.median_mm), metavar="MM",
                        help="candidate median widths (default: %(default)s)")
    parser.add_argument("--min-finding-ml", type=float, nargs="+", default=list(_RULE.min_finding_ml),
                        metavar="ML", help="candidate minimum finding sizes (default: %(default)s)")
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
    from AnomalySegLib.calibration import calibrate_bundle, describe, describe_operating_point
    from AnomalySegLib.device import set_cpu_threads

    set_cpu_threads(args.threads)
    rule = None
    if args.lesion_copies > 0:
        rule = SearchRule(lesion_copies=args.lesion_copies, max_healthy_ml=args.max_healthy_ml,
                          max_healthy_findings=args.max_healthy_findings,
                          rim_erosion_mm=tuple(args.rim_erosion_mm), median_mm=tuple(args.median_mm),
                          min_finding_ml=tuple(args.min_finding_ml), seed=args.seed)
    written, result, operating_point = calibrate_bundle(
        args.model, args.val, args.healthy, args.out,
        overwrite=args.overwrite, device=args.device, precision=args.precision, seed=args.seed,
        rates=tuple(args.fpr), beta_candidates=tuple(args.beta), rule=rule,
    )
    if result is not None:
        print(describe(result))
    if operating_point is not None:
        print(describe_operating_point(operating_point))
    print(written)
    return 0
