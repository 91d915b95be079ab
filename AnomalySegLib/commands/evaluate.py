"""``anomalyseg evaluate``: the paper's metrics of a model bundle on preprocessed cases, as a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.choices import THRESHOLD_PRESETS
from AnomalySegLib.cli_common import add_compute_options, add_seed_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a model on preprocessed cases (⌈Dice⌉, Dice, AUPRC, AUROC, FPR, lesions, volume)",
        description="Score every case folder under --data (made by 'anomalyseg preprocess' or "
        "'anomalyseg prepare-dataset'; cases with labels.nii.gz are anomalous, the others healthy) and "
        "write REPORT/{report.md,cases.csv,report.json,pr_curve.png}: mean ± std over volumes and one "
        "row per case, for the full model and its ablations (Stage I only, U-Net only), on the model grid.",
    )
    parser.add_argument("--model", type=Path, required=True, help="model bundle")
    parser.add_argument("--data", type=Path, required=True, help="folder of preprocessed case folders")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="REPORT", help="report folder")
    parser.add_argument("--threshold", metavar="T",
                        help="threshold of the combined score: a number or a preset of the bundle "
                        f"({', '.join(THRESHOLD_PRESETS)}); default: the bundle's 'val' preset")
    parser.add_argument("--native", action="store_true",
                        help="also measure the combined map on each labelled case's native grid (restored onto "
                        "the source scan, against its label file as named in preprocessing.json)")
    parser.add_argument("--raw", action="store_true",
                        help="metrics at the threshold of 'score > t' alone, without the bundle's clean-up "
                        "(rim erosion, median, minimum finding size): the paper's protocol")
    parser.add_argument("--overwrite", action="store_true", help="replace existing report files")
    add_seed_option(parser)
    add_compute_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.device import set_cpu_threads
    from AnomalySegLib.evaluation import evaluate_bundle, write_report
    from AnomalySegLib.evaluation.report import REPORT_FILES, summary_table
    from AnomalySegLib.io.atomic import check_writable

    for name in REPORT_FILES:  # fail before hours of scoring, not after
        check_writable(args.output / name, args.overwrite)
    set_cpu_threads(args.threads)
    result = evaluate_bundle(args.model, args.data, args.threshold, device=args.device,
                             precision=args.precision, seed=args.seed, native=args.native,
                             raw=args.raw)
    written = write_report(result, args.output, overwrite=args.overwrite)
    print(summary_table(result))
    for path in written:
        print(path)
    return 0
