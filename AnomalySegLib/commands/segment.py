"""``anomalyseg segment``: brain MRI → reconstruction, anomaly map and segmentation, for one case or thousands.

The model is loaded once; cases run one after another; a failing case is reported and the run goes
on; finished cases are skipped on a re-run unless ``--overwrite``; the exit status is 0 only if every
case succeeded. Under ``torchrun --nproc-per-node N`` each process takes every N-th case on its own
GPU and rank 0 writes the run's results table.
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch.distributed as dist

from AnomalySegLib import __version__
from AnomalySegLib.batch import CaseOutcome, run_batch
from AnomalySegLib.device import set_cpu_threads
from AnomalySegLib.errors import InputError
from AnomalySegLib.io.case_inputs import CaseInput, discover_cases
from AnomalySegLib.io.volume_io import strip_volume_suffix, volume_suffix
from AnomalySegLib.outputs import CaseOutputs, mark_complete, write_case_outputs
from AnomalySegLib.pipeline import THRESHOLD_PRESETS, AnomalySegmenter, PreparedCase, SegmentationResult
from AnomalySegLib.progress import PROGRESS_FORMATS, ProgressReporter
from AnomalySegLib.reporting.results_table import write_results_table
from AnomalySegLib.training.distributed import init_distributed

log = logging.getLogger(__name__)

EXIT_SOME_CASES_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="find and outline anomalies in brain MRI (a file, a folder, or a .txt list of files)",
        description="Segment anomalies. Per case, OUTDIR gets <case>_recon.nii.gz, <case>_anomaly_map.nii.gz, "
        "<case>_anomaly_mask.nii.gz, <case>_anomaly.seg.nrrd, <case>_qc.png and <case>_result.json, all in "
        "the input's geometry; the run writes results.csv and results.json. Exit status 1 if any case failed.",
    )
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="a volume (NIfTI, NRRD, MHA), a DICOM folder, a folder of those, or a .txt list")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--model", type=Path, metavar="BUNDLE", help="model bundle folder (default: bundled model)")
    parser.add_argument("--mask", type=Path, metavar="M",
                        help="brain mask: a file (one case) or a folder with a mask per case id")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: bf16/fp16 autocast on GPU, fp32 on CPU")
    parser.add_argument("--threshold", default="val", metavar="VALUE|PRESET",
                        help=f"a number, or a calibrated preset: {', '.join(THRESHOLD_PRESETS)} (default: val)")
    parser.add_argument("--save-intermediate", action="store_true",
                        help="also write the model-space volumes (<case>_model_space/)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs, redo finished cases")
    parser.add_argument("--progress-format", choices=PROGRESS_FORMATS, default="tty",
                        help="tty: a progress bar on stderr; json: one JSON line per step on stdout")
    parser.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise (default 0)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores, or $ANOMALYSEG_THREADS)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cases = discover_cases(args.input)
    masks = _masks_for(cases, args.mask)
    context = init_distributed(args.device)
    my_cases = cases[context.rank :: context.world_size]
    set_cpu_threads(args.threads)
    segmenter = AnomalySegmenter(args.model, device=str(context.device), precision=args.precision, seed=args.seed)
    threshold = segmenter.resolve_threshold(args.threshold)  # an unknown preset fails before any case starts
    args.output.mkdir(parents=True, exist_ok=True)
    pending = [c for c in my_cases if args.overwrite or not CaseOutputs(args.output, c.case_id).is_complete()]
    # On a GPU the networks take well under a second and reading + preprocessing (CPU) dominate:
    # prepare the next case in a thread meanwhile. On the CPU both would compete for the same cores.
    prefetcher = Prefetcher(segmenter, pending, masks) if segmenter.device.type != "cpu" and len(pending) > 1 else None

    rows: list[dict[str, Any]] = []
    run_started = time.time()
    with ProgressReporter(args.progress_format, cases=max(1, len(my_cases))) as progress:

        def process(case: CaseInput) -> None:
            progress.start_case(case.case_id)
            outputs = CaseOutputs(args.output, case.case_id)
            if outputs.is_complete() and not args.overwrite:
                row = {**outputs.previous_row(), "status": "skipped (done earlier)"}
                rows.append(row)
                progress.case_done(outputs.files, skipped=True, **_summary(row))
                return
            outputs.check_free(args.overwrite)
            started = time.perf_counter()
            if prefetcher is not None:
                prepared = prefetcher.take(case)
                progress.update("preprocess", 1.0, "prepared while the previous case ran")
            else:
                prepared = segmenter.prepare_file(case.path, masks.get(case.case_id), progress.update)
            result = segmenter.finish(prepared, threshold, progress.update)
            progress.update("write", 0.0, "writing outputs")
            write_started = time.perf_counter()
            row = _row(case, result, segmenter)
            files = write_case_outputs(result, outputs, args.overwrite, args.save_intermediate)
            row["seconds_write"] = time.perf_counter() - write_started
            row["seconds_total"] = time.perf_counter() - started
            mark_complete(outputs, row, args.overwrite)
            rows.append(row)
            progress.case_done(files, **_summary(row), thresholds=result.thresholds)

        def on_outcome(done: int, total: int, outcome: CaseOutcome) -> None:
            if not outcome.ok:
                rows.append({"case": outcome.case_id, "status": "failed", "error": outcome.error,
                             "input": str(next(c.path for c in my_cases if c.case_id == outcome.case_id)),
                             "seconds_total": outcome.seconds})
                progress.case_failed(outcome.error or "failed")

        try:
            report = run_batch(my_cases, process, on_progress=on_outcome)
        finally:
            if prefetcher is not None:
                prefetcher.close()

    all_rows = _gather(rows, context)
    if context.is_main:
        run_info = {"engine_version": __version__, "model": segmenter.model_name, "device": str(segmenter.device),
                    "input": str(args.input), "threshold": args.threshold, "started": run_started,
                    "seconds": time.time() - run_started}
        write_results_table(sorted(all_rows, key=lambda r: r["case"]), args.output, run_info)
    failed = [row for row in all_rows if row.get("status") == "failed"]
    log.info("%s", report.summary())
    return EXIT_SOME_CASES_FAILED if failed else 0


class Prefetcher:
    """Reads and preprocesses the case after the current one in a background thread.

    SimpleITK releases the GIL in its filters, so preprocessing (the bulk of a case on a GPU machine)
    runs while the main thread drives the GPU. Errors surface when the case is taken.
    """

    def __init__(self, segmenter: AnomalySegmenter, cases: list[CaseInput], masks: dict[str, Path]) -> None:
        self._segmenter = segmenter
        self._cases = list(cases)
        self._masks = masks
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anomalyseg-prefetch")
        self._futures: dict[str, Future] = {}
        self._schedule(0)

    def take(self, case: CaseInput) -> PreparedCase:
        """The prepared ``case`` (waiting for it if needed); starts preparing the one after it."""
        future = self._futures.pop(case.case_id, None) or self._submit(case)
        index = next((i for i, c in enumerate(self._cases) if c.case_id == case.case_id), len(self._cases))
        self._schedule(index + 1)
        return future.result()

    def close(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._executor.shutdown(wait=True)

    def _schedule(self, index: int) -> None:
        if index < len(self._cases) and self._cases[index].case_id not in self._futures:
            case = self._cases[index]
            self._futures[case.case_id] = self._submit(case)

    def _submit(self, case: CaseInput) -> Future:
        return self._executor.submit(self._segmenter.prepare_file, case.path, self._masks.get(case.case_id))


def _masks_for(cases: list[CaseInput], mask: Path | None) -> dict[str, Path]:
    """Case id → brain mask file, from ``--mask`` (a file for a single case, or a folder)."""
    if mask is None:
        return {}
    if not mask.exists():
        raise InputError(mask, "does not exist")
    if mask.is_file():
        if len(cases) != 1:
            raise InputError(mask, f"is one mask file but the input has {len(cases)} cases; give a folder "
                             "of masks named like the cases")
        return {cases[0].case_id: mask}
    by_id = {strip_volume_suffix(p): p for p in mask.iterdir() if volume_suffix(p) is not None}
    by_id.update({name[: -len("_mask")]: path for name, path in list(by_id.items()) if name.endswith("_mask")})
    return {case.case_id: by_id[case.case_id] for case in cases if case.case_id in by_id}


def _row(case: CaseInput, result: SegmentationResult, segmenter: AnomalySegmenter) -> dict[str, Any]:
    timings = result.info["timings_s"]
    return {
        "case": case.case_id,
        "status": "ok",
        "error": None,
        "input": str(case.path),
        "mask_source": result.info["preprocessing"]["mask_source"],
        **result.findings.as_row(),
        "threshold": result.threshold,
        "threshold_source": result.threshold_source,
        "model": segmenter.model_name,
        "engine_version": __version__,
        "device": result.info["device"],
        **{f"seconds_{stage}": seconds for stage, seconds in timings.items()},
        "outputs": {role: str(path) for role, path in CaseOutputs(Path(), case.case_id).files.items()},
        "registration": result.info["preprocessing"].get("registration"),
    }


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """What the ``case_done`` progress event carries (the Slicer module reads it)."""
    return {key: row.get(key) for key in ("volume_ml", "components", "threshold", "threshold_source")}


def _gather(rows: list[dict[str, Any]], context) -> list[dict[str, Any]]:
    """Every process's rows (on every process); the rows themselves when single-process."""
    if not context.distributed:
        return rows
    gathered: list[list[dict[str, Any]]] = [[] for _ in range(context.world_size)]
    dist.all_gather_object(gathered, rows)
    return [row for part in gathered for row in part]
