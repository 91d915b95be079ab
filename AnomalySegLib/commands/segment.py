"""``anomalyseg segment``: brain MRI → reconstruction, anomaly map and segmentation, for one case or thousands.

Parses the options; the work (resume, re-threshold, batch, results table, ``torchrun`` sharding) is
:func:`AnomalySegLib.segment_batch.segment_cases`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.choices import THRESHOLD_PRESETS, VALIDATION_PRESET
from AnomalySegLib.cli_common import add_compute_options, add_seed_option, exit_status
from AnomalySegLib.progress import PROGRESS_FORMATS



def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="find and outline anomalies in brain MRI (a file, a folder, or a .txt list of files)",
        description="Segment anomalies. Per case, OUTDIR gets <case>_recon.nii.gz, <case>_anomaly_map.nii.gz, "
        "<case>_anomaly_mask.nii.gz, <case>_anomaly.seg.nrrd, <case>_qc.png and <case>_result.json, all in "
        "the input's geometry; results.csv and results.json list every case of OUTDIR. A re-run into the "
        "same OUTDIR skips cases finished with the same model, threshold and options, re-thresholds those "
        "that differ only in the threshold, and finishes cases a killed run left. Exit status 1 if any "
        "case failed, 2 for a problem with the run itself.",
    )
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="a volume (NIfTI, NRRD, MHA), a DICOM folder, a folder of those, or a .txt list")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--model", type=Path, metavar="BUNDLE", help="model bundle folder (default: bundled model)")
    parser.add_argument("--mask", type=Path, metavar="M",
                        help="brain mask: a file (one case) or a folder with a mask per case "
                        "(<case>.nii.gz or <case>_mask.*)")
    parser.add_argument("--threshold", default=VALIDATION_PRESET, metavar="VALUE|PRESET",
                        help=f"a number, or a calibrated preset: {', '.join(THRESHOLD_PRESETS)} "
                        f"(default: {VALIDATION_PRESET})")
    parser.add_argument("--save-intermediate", action="store_true",
                        help="also write the model-space volumes (<case>_model_space/)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs, redo finished cases")
    parser.add_argument("--progress-format", choices=PROGRESS_FORMATS, default="tty",
                        help="tty: a progress bar on stderr; json: one JSON line per step on stdout")
    add_compute_options(parser)
    add_seed_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.segment_batch import SegmentOptions, segment_cases

    options = SegmentOptions(output=args.output, model=args.model, mask=args.mask, device=args.device,
                             precision=args.precision, threshold=args.threshold,
                             save_intermediate=args.save_intermediate, overwrite=args.overwrite, seed=args.seed,
                             threads=args.threads, progress_format=args.progress_format)
    summary = segment_cases(args.input, options)
    return exit_status(not summary.failed)
