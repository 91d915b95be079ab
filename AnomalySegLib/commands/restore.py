"""``anomalyseg restore``: map model-space maps back onto the native grid of their input scans."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from AnomalySegLib.cli_common import exit_status


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "restore",
        help="resample model-space maps onto the native grid of the input scans",
        description="Inverse of 'preprocess': resample a model-space map (or a folder of them, named by "
        "case id) onto exactly the grid of its reference scan, through the inverse of the case's "
        "transform. Continuous maps: linear, 0 outside model space; --binary: linear then ≥ 0.5.",
    )
    parser.add_argument("map", type=Path, metavar="MAP", help="model-space map file, or folder of <case_id>.nii.gz")
    parser.add_argument("--reference", type=Path, required=True, metavar="INPUT",
                        help="the native scan (file) or a folder/list of scans named like the maps")
    parser.add_argument("--transform", type=Path, required=True, metavar="T",
                        help="transform.tfm (single map), or the preprocess output folder "
                        "(<case_id>/transform.tfm) or a folder of <case_id>.tfm")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="output file (single map) or folder (<case_id>.nii.gz per map)")
    parser.add_argument("--binary", action="store_true", help="the maps are binary masks (output uint8 0/1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class RestoreJob:
    case_id: str
    map_path: Path
    reference_path: Path
    transform_path: Path
    output_path: Path


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.batch import run_batch
    from AnomalySegLib.errors import InputError, OutputExistsError
    from AnomalySegLib.io.volume_io import read_volume, write_volume
    from AnomalySegLib.preprocessing.case_folder import read_transform
    from AnomalySegLib.preprocessing.restore import restore_to_native

    jobs = plan(args.map, args.reference, args.transform, args.output)
    kind = "binary" if args.binary else "continuous"

    def process(job: RestoreJob) -> None:
        if job.output_path.exists() and not args.overwrite:
            raise OutputExistsError(job.output_path)
        model_map = read_volume(job.map_path)  # model-space maps may be all zero: no validate_volume
        reference = read_volume(job.reference_path)
        transform = read_transform(job.transform_path)
        try:
            restored = restore_to_native(model_map, reference, transform, kind=kind)
        except (ValueError, RuntimeError) as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise InputError(job.map_path, f"cannot be restored ({reason})") from error
        write_volume(restored, job.output_path, overwrite=args.overwrite)
        print(job.output_path)

    report = run_batch(jobs, process)  # logs each failure (one line naming the file and problem) and a summary
    return exit_status(report.all_ok)


def plan(map_path: Path, reference: Path, transform: Path, output: Path) -> list[RestoreJob]:
    """One job per map: a single file, or every volume in the ``map_path`` folder matched by case id."""
    from AnomalySegLib.errors import InputError
    from AnomalySegLib.io.case_inputs import discover_cases
    from AnomalySegLib.io.volume_io import strip_volume_suffix, volume_suffix
    from AnomalySegLib.preprocessing.case_folder import TRANSFORM_FILE

    if not map_path.exists():
        raise InputError(map_path, "does not exist")
    if map_path.is_file():
        if transform.is_dir():
            transform = transform / TRANSFORM_FILE
        return [RestoreJob(strip_volume_suffix(map_path), map_path, reference, transform, output)]
    maps = {strip_volume_suffix(p): p for p in sorted(map_path.iterdir())
            if volume_suffix(p) is not None and not p.name.startswith(".")}
    if not maps:
        raise InputError(map_path, "holds no model-space map (no volume file)")
    references = {case.case_id: case.path for case in discover_cases(reference)}
    jobs = []
    for case_id, path in maps.items():
        if case_id not in references:
            raise InputError(reference, f"holds no reference scan for the map {path.name}")
        tfm = transform / case_id / TRANSFORM_FILE
        if not tfm.is_file():
            tfm = transform / f"{case_id}.tfm"
        jobs.append(RestoreJob(case_id, path, references[case_id], tfm, output / f"{case_id}.nii.gz"))
    return jobs
