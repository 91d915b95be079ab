"""``anomalyseg preprocess``: bring scans into model space, one case folder each (see case_folder.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from AnomalySegLib.batch import run_batch
from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.io.case_inputs import CaseInput, discover_cases
from AnomalySegLib.io.volume_io import strip_volume_suffix, volume_suffix
from AnomalySegLib.preprocessing.case_folder import write_case
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.preprocessing.spec import PreprocessingSpec, SpecError

EXIT_SOME_CASES_FAILED = 1


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
    spec = read_spec(args.spec) if args.spec else PreprocessingSpec()
    cases = discover_cases(args.input)
    masks = companions(cases, args.mask, "mask")
    labels = companions(cases, args.labels, "label")

    def process(case: CaseInput) -> None:
        folder = args.output / case.case_id
        if folder.exists() and not args.overwrite:
            raise OutputExistsError(folder)
        result = preprocess_file(case.path, masks.get(case.case_id), labels.get(case.case_id),
                                 args.label_values, spec)
        write_case(result, folder, overwrite=args.overwrite)
        print(folder)

    report = run_batch(cases, process)  # logs each failure (one line naming the file and problem) and a summary
    return 0 if report.all_ok else EXIT_SOME_CASES_FAILED


def read_spec(path: Path) -> PreprocessingSpec:
    """A spec from a JSON file holding a spec, or a document with a ``"spec"`` entry
    (a case folder's ``preprocessing.json``)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"cannot be read as a JSON preprocessing spec ({error})") from error
    if isinstance(document, dict) and isinstance(document.get("spec"), dict):
        document = document["spec"]
    try:
        return PreprocessingSpec.from_dict(document)
    except SpecError as error:
        raise InputError(path, str(error)) from error


def companions(cases: list[CaseInput], given: Path | None, what: str) -> dict[str, Path]:
    """Case id → the ``what`` file (mask or labels) from ``--mask``/``--labels``.

    A file is allowed for a single case; a folder must hold one file per case, named like the case
    (``<case_id>.nii.gz``, any volume type), or ``<case_id>_<what>.*``.
    """
    if given is None:
        return {}
    if not given.exists():
        raise InputError(given, "does not exist")
    if given.is_file():
        if len(cases) != 1:
            raise InputError(given, f"is one {what} file but the input has {len(cases)} cases; give a "
                             f"folder of {what} files named like the cases")
        return {cases[0].case_id: given}
    by_id: dict[str, Path] = {}
    for path in sorted(given.iterdir()):
        if volume_suffix(path) is None or path.name.startswith("."):
            continue
        name = strip_volume_suffix(path)
        by_id[name] = path
        for suffix in (f"_{what}", f"-{what}", f"_{what}s", f"-{what}s"):
            if name.endswith(suffix):
                by_id.setdefault(name[: -len(suffix)], path)
    missing = [case.case_id for case in cases if case.case_id not in by_id]
    if missing:
        raise InputError(given, f"holds no {what} file for case(s) {', '.join(missing[:5])}"
                         f"{' …' if len(missing) > 5 else ''} (expected <case_id>.nii.gz or <case_id>_{what}.*)")
    return {case.case_id: by_id[case.case_id] for case in cases}
