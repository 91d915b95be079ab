"""``anomalyseg preprocess``: bring scans into model space, one case folder each (see case_folder.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.cli_common import exit_status


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="bring brain MRI into model space (N4, affine registration to the template, 96×96×50 at 2 mm)",
        description="Preprocess scans as in the paper (bias correction, affine registration to the MNI "
        "ICBM152 2009c template, denoising, rescaling inside the brain) and write one case folder per "
        "scan: OUTDIR/<case_id>/{image,mask[,labels]}.nii.gz, transform.tfm, preprocessing.json.",
    )
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="a volume file, a DICOM folder, a folder of those, or a .txt list")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR",
                        help="folder to write the case folders into")
    parser.add_argument("--mask", type=Path, metavar="M",
                        help="brain mask file (single input) or folder of masks named like the cases")
    parser.add_argument("--labels", type=Path, metavar="L",
                        help="anomaly label file (single input) or folder of label files named like the cases")
    parser.add_argument("--label-values", type=int, nargs="+", metavar="V",
                        help="label values that mark the anomaly (default: every value > 0)")
    parser.add_argument("--spec", type=Path, metavar="S",
                        help="preprocessing spec JSON (a spec, or a case's preprocessing.json); default: paper")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case folders")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.batch import run_batch
    from AnomalySegLib.errors import OutputExistsError
    from AnomalySegLib.io.case_inputs import CaseInput, companion_files, discover_cases
    from AnomalySegLib.preprocessing.case_folder import write_case
    from AnomalySegLib.preprocessing.pipeline import preprocess_file
    from AnomalySegLib.preprocessing.spec import PreprocessingSpec, read_spec

    spec = read_spec(args.spec) if args.spec else PreprocessingSpec()
    cases = discover_cases(args.input)
    masks = companion_files(cases, args.mask, "mask")
    labels = companion_files(cases, args.labels, "label")

    def process(case: CaseInput) -> None:
        folder = args.output / case.case_id
        if folder.exists() and not args.overwrite:
            raise OutputExistsError(folder)
        result = preprocess_file(case.path, masks.get(case.case_id), labels.get(case.case_id),
                                 args.label_values, spec)
        write_case(result, folder, overwrite=args.overwrite)
        print(folder)

    report = run_batch(cases, process)  # logs each failure (one line naming the file and problem) and a summary
    return exit_status(report.all_ok)

