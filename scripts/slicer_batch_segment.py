"""Segment anomalies in every volume of a folder with Slicer, without its main window.

    Slicer --no-splash --no-main-window --python-script scripts/slicer_batch_segment.py \\
        INPUT_FOLDER OUTPUT_FOLDER [--model BUNDLE] [--device auto|cuda|mps|cpu]
        [--threshold val|fpr1|fpr5|fpr10|VALUE] [--mask-suffix _mask] [--install-dependencies]

Each volume Slicer can read (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``) is loaded as a
node, run through ``AnomalySegLogic.process`` (the same path as the module's Apply button) and
its results kept in ``OUTPUT_FOLDER/<case>/``: the engine's files (reconstruction, anomaly map,
mask, ``.seg.nrrd``, QC picture, ``results.csv``) plus ``<case>.mrb``, a Slicer scene with the
overlay ready to open. A file ``<case><mask-suffix>.<ext>`` next to a volume is used as its brain
mask. A failing case is reported and the others go on; the exit status is 0 when all succeeded,
1 otherwise, 2 for bad arguments. ``OUTPUT_FOLDER/<case>`` must not exist yet (nothing is
overwritten). For folders of files, ``anomalyseg segment INPUT_FOLDER -o OUTPUT_FOLDER`` does the
same without Slicer; this script is for data Slicer reads best (e.g. after DICOM import) and for
scenes to review. Slicer passes the arguments after the script path to it as ``sys.argv``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import slicer

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slicer_batch_segment.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputFolder", type=Path)
    parser.add_argument("outputFolder", type=Path)
    parser.add_argument("--model", help="model bundle folder (default: the engine's default model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--threshold", default="val", help="val, fpr1, fpr5, fpr10 or a number")
    parser.add_argument("--mask-suffix", default="_mask", help="suffix of brain mask files (default: _mask)")
    parser.add_argument("--install-dependencies", action="store_true",
                        help="install missing Python packages (torch, MONAI, ...) into Slicer first")
    return parser.parse_args(argv)


def caseName(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def findCases(folder: Path, maskSuffix: str) -> list[tuple[Path, Path | None]]:
    """(volume, brain mask or None) for each volume file of ``folder``, sorted by name."""
    volumes = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
    masks = {caseName(p): p for p in volumes if caseName(p).endswith(maskSuffix)}
    return [(p, masks.get(caseName(p) + maskSuffix)) for p in volumes if p not in masks.values()]


def segmentCase(logic, volumePath: Path, maskPath: Path | None, caseFolder: Path, args) -> str:
    """Run one case; returns a one-line summary. Raises on failure."""
    slicer.mrmlScene.Clear()
    volume = slicer.util.loadVolume(str(volumePath))
    mask = slicer.util.loadVolume(str(maskPath), {"labelmap": True}) if maskPath else None
    results = logic.process(volume, brainMask=mask, model=args.model, device=args.device,
                            threshold=args.threshold, outputFolder=str(caseFolder), waitForCompletion=True)
    parameterNode = logic.getParameterNode()
    parameterNode.inputVolume = volume
    logic.storeResults(parameterNode, results)  # the saved scene can be re-thresholded in the module
    sceneFile = caseFolder / f"{caseName(volumePath)}.mrb"
    if not slicer.util.saveScene(str(sceneFile)):
        raise RuntimeError(f"{sceneFile}: could not save the scene")
    statistics = results.statistics
    warnings = "".join(f"; warning: {warning}" for warning in results.qcWarnings)
    return f"{statistics.volumeMl:.2f} ml in {statistics.findings} finding(s), scene {sceneFile.name}{warnings}"


def main(argv: list[str]) -> int:
    try:
        args = parseArguments(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if not args.inputFolder.is_dir():
        print(f"{args.inputFolder}: not a folder", file=sys.stderr)
        return 2
    cases = findCases(args.inputFolder, args.mask_suffix)
    if not cases:
        print(f"{args.inputFolder}: no volume files ({', '.join(VOLUME_SUFFIXES)})", file=sys.stderr)
        return 2

    import AnomalySeg  # the module; found on Slicer's module paths

    logic = AnomalySeg.AnomalySegLogic(interactive=False)
    if args.install_dependencies:
        logic.installDependencies()
    failures = 0
    for index, (volumePath, maskPath) in enumerate(cases, start=1):
        caseFolder = args.outputFolder / caseName(volumePath)
        started = time.monotonic()
        try:
            if caseFolder.exists():
                raise FileExistsError(f"{caseFolder}: exists already; choose another output folder")
            caseFolder.mkdir(parents=True)
            summary = segmentCase(logic, volumePath, maskPath, caseFolder, args)
            print(f"[{index}/{len(cases)}] {volumePath.name}: {summary} ({time.monotonic() - started:.0f} s)")
        except Exception as error:  # one case failing must not stop the batch
            failures += 1
            logging.debug("case %s failed", volumePath, exc_info=True)
            print(f"[{index}/{len(cases)}] {volumePath.name}: FAILED: {error}", file=sys.stderr)
        sys.stdout.flush()
    print(f"{len(cases) - failures} of {len(cases)} case(s) done; results in {args.outputFolder}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    slicer.util.exit(main(sys.argv[1:]))
