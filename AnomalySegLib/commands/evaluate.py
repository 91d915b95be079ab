"""``anomalyseg evaluate``: the paper's metrics of a model bundle on preprocessed cases, as a report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from AnomalySegLib.choices import PROTOCOLS, THRESHOLD_PRESETS
from AnomalySegLib.cli_common import add_compute_options, add_seed_option

PAPER_TABLE_MD, PAPER_TABLE_JSON = "paper_table.md", "paper_table.json"


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
    parser.add_argument("--protocol", choices=PROTOCOLS, default="default",
                        help="'paper': also write REPORT/paper_table.{md,json}, Table 1's columns as the "
                        "authors' code computes them, with no clean-up as --raw (⌈Dice⌉ by 10-step bisection, exact ⌈Dice⌉, AUPRC; "
                        "labelled volumes whose lesion vanishes on the grid count as 0); see docs/evaluation.md")
    parser.add_argument("--overwrite", action="store_true", help="replace existing report files")
    add_seed_option(parser)
    add_compute_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.device import set_cpu_threads
    from AnomalySegLib.evaluation import evaluate_bundle, write_report
    from AnomalySegLib.evaluation.evaluate import paper_summary, paper_table
    from AnomalySegLib.evaluation.report import REPORT_FILES, summary_table
    from AnomalySegLib.evaluation.report import _json_safe as json_safe  # NaN → null, as report.json
    from AnomalySegLib.io.atomic import atomic_write_text, check_writable

    paper_files = (PAPER_TABLE_MD, PAPER_TABLE_JSON) if args.protocol == "paper" else ()
    for name in (*REPORT_FILES, *paper_files):  # fail before hours of scoring, not after
        check_writable(args.output / name, args.overwrite)
    set_cpu_threads(args.threads)
    result = evaluate_bundle(args.model, args.data, args.threshold, device=args.device,
                             precision=args.precision, seed=args.seed, native=args.native,
                             raw=args.raw or args.protocol == "paper")
    written = write_report(result, args.output, overwrite=args.overwrite)
    print(summary_table(result))
    if args.protocol == "paper":
        table = paper_table(result)
        print(table)
        for name, text in ((PAPER_TABLE_MD, table), (PAPER_TABLE_JSON, json.dumps(json_safe(paper_summary(result)), indent=2))):
            atomic_write_text(args.output / name, text, overwrite=args.overwrite)
            written.append(args.output / name)
    for path in written:
        print(path)
    return 0
