"""Segment one case or thousands into an output folder: the engine behind ``anomalyseg segment``.

The model is loaded once; cases run one after another; a failing case is reported and the run goes
on. A re-run into the same folder finishes exactly what is unfinished:

- a case finished with the same :class:`~AnomalySegLib.case_info.CaseSpec` (model weights,
  threshold, seed, mask, intermediates) is skipped;
- a finished case whose only difference is the threshold is re-thresholded from its saved anomaly
  map (no network pass);
- a finished case made with other settings fails with a one-line message (``overwrite`` redoes it);
- outputs a killed run left half-written (see :class:`~AnomalySegLib.outputs.CaseOutputs`) are replaced.

``results.csv``/``results.json`` hold every case of the folder: this run's rows merged by case id
with the earlier table. Under ``torchrun --nproc-per-node N`` each process takes every N-th case on
its own GPU and rank 0 writes the table. Python use::

    from AnomalySegLib.segment_batch import SegmentOptions, segment_cases
    summary = segment_cases(Path("scans/"), SegmentOptions(output=Path("out/"), device="cpu"))
    print(summary.failed, summary.rows[0]["volume_ml"])
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from AnomalySegLib import __version__
from AnomalySegLib.batch import BatchReport, CaseOutcome, run_batch
from AnomalySegLib.case_info import THRESHOLD_SETTINGS, CaseInfo, CaseSpec, StageTimings
from AnomalySegLib.device import describe, set_cpu_threads
from AnomalySegLib.distributed import DistributedContext, init_distributed
from AnomalySegLib.errors import AnomalySegError
from AnomalySegLib.io.atomic import ensure_output_folder
from AnomalySegLib.io.case_inputs import CaseInput, companion_files, discover_cases
from AnomalySegLib.io.volume_io import read_volume
from AnomalySegLib.outputs import CaseOutputs, mark_complete, write_case_outputs
from AnomalySegLib.pipeline import AnomalySegmenter, PreparedCase, SegmentationResult
from AnomalySegLib.progress import ProgressReporter
from AnomalySegLib.reporting.results_table import write_results_table

log = logging.getLogger(__name__)

#: What a re-thresholded case rewrites; its reconstruction and anomaly map stay as they are.
RETHRESHOLD_ROLES = ("anomaly_mask", "segmentation", "qc", "findings")


@dataclass
class SegmentOptions:
    """How to segment (the options of ``anomalyseg segment``).

    Attributes:
        output: the output folder (created if needed).
        model: a model bundle folder (``None``: the bundled default model).
        mask: a brain mask file (one case) or a folder of masks named like the cases.
        device: ``"auto"`` (CUDA → MPS → CPU), ``"cuda"``, ``"mps"``, ``"cpu"``, ``"cuda:1"``...
        precision: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``.
        threshold: a number or a calibrated preset name of the model.
        save_intermediate: also write the model-space volumes.
        overwrite: redo finished cases and replace any existing outputs.
        seed: the diffusion noise seed.
        threads: CPU threads (``None``: all cores or ``$ANOMALYSEG_THREADS``).
        progress_format: ``"tty"`` (a bar on stderr) or ``"json"`` (protocol lines on stdout).
    """

    output: Path
    model: Path | None = None
    mask: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    threshold: str | float = "val"
    save_intermediate: bool = False
    overwrite: bool = False
    seed: int = 0
    threads: int | None = None
    progress_format: str = "tty"


@dataclass
class SegmentSummary:
    """What a run did: ``rows`` of this process's cases (results-table rows), the batch ``report``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    report: BatchReport | None = None

    @property
    def failed(self) -> list[str]:
        """Ids of the cases that failed."""
        return [row["case"] for row in self.rows if row.get("status") == "failed"]


def segment_cases(input_path: Path, options: SegmentOptions) -> SegmentSummary:
    """Segment every case of ``input_path`` (a volume, DICOM folder, folder of those, or a .txt list).

    Raises:
        AnomalySegError: a problem with the run itself (no cases, bad mask folder, unusable model
            or output folder, unknown threshold preset); problems of one case are reported in its row.
    """
    cases = discover_cases(input_path)
    masks = companion_files(cases, options.mask, "mask")
    ensure_output_folder(options.output)  # before loading the model: a bad -o fails at once
    context = init_distributed(options.device)
    my_cases = cases[context.rank :: context.world_size]
    set_cpu_threads(options.threads)
    segmenter = AnomalySegmenter(options.model, device=str(context.device), precision=options.precision,
                                 seed=options.seed)
    threshold = segmenter.resolve_threshold(options.threshold)  # an unknown preset fails before any case
    _announce_device(segmenter, options.device)
    runner = _CaseRunner(segmenter, options, masks, threshold)
    pending = [c for c in my_cases if options.overwrite or not CaseOutputs(options.output, c.case_id).is_complete()]
    # On a GPU the networks take well under a second and reading + preprocessing (CPU) dominate:
    # prepare the next case in a thread meanwhile. On the CPU both would compete for the same cores.
    if segmenter.device.type != "cpu" and len(pending) > 1:
        runner.prefetcher = Prefetcher(segmenter, pending, masks)

    summary = SegmentSummary()
    run_started = time.time()
    run_info = {"device": str(segmenter.device), "device_name": describe(segmenter.device),
                "precision": segmenter.precision}
    with ProgressReporter(options.progress_format, cases=max(1, len(my_cases)), run_info=run_info) as progress:

        def process(case: CaseInput) -> None:
            progress.start_case(case.case_id)
            summary.rows.append(runner.run(case, progress))

        def on_outcome(done: int, total: int, outcome: CaseOutcome) -> None:
            if not outcome.ok:
                summary.rows.append({"case": outcome.case_id, "status": "failed", "error": outcome.error,
                                     "input": str(next(c.path for c in my_cases if c.case_id == outcome.case_id)),
                                     "seconds_total": outcome.seconds})
                progress.case_failed(outcome.error or "failed")

        try:
            summary.report = run_batch(my_cases, process, on_progress=on_outcome)
        finally:
            if runner.prefetcher is not None:
                runner.prefetcher.close()

    all_rows = _gather(summary.rows, context)
    if context.is_main:
        info = {"engine_version": __version__, "model": segmenter.model_name, **run_info,
                "input": str(input_path), "threshold": options.threshold, "started": run_started,
                "seconds": time.time() - run_started}
        try:
            write_results_table(all_rows, options.output, info)
        except AnomalySegError as error:
            # The per-case result files are written; only the run's table is missing.
            raise AnomalySegError(f"results table not written: {error}") from error
    return summary


def _announce_device(segmenter: AnomalySegmenter, request: str) -> None:
    """One log line (stderr) naming the device and precision; a warning when ``auto`` found no GPU."""
    where = f"{segmenter.device} ({describe(segmenter.device)}), precision {segmenter.precision}"
    if request == "auto" and segmenter.device.type == "cpu":
        log.warning("no GPU found (--device auto): running on %s", where)
    else:
        log.info("running on %s", where)


class _CaseRunner:
    """Does one case: skip, re-threshold, resume or segment it, and returns its results-table row."""

    def __init__(self, segmenter: AnomalySegmenter, options: SegmentOptions, masks: dict[str, Path],
                 threshold: tuple[float, str]) -> None:
        self.segmenter = segmenter
        self.options = options
        self.masks = masks
        self.threshold = threshold
        self.prefetcher: Prefetcher | None = None

    def settings(self, case: CaseInput) -> CaseSpec:
        mask = self.masks.get(case.case_id)
        return CaseSpec(model=self.segmenter.model_name, model_sha256=self.segmenter.bundle.fingerprint(),
                            threshold=self.threshold[0], threshold_source=self.threshold[1], seed=self.segmenter.seed,
                            mask=None if mask is None else str(mask), save_intermediate=self.options.save_intermediate)

    def run(self, case: CaseInput, progress: ProgressReporter) -> dict[str, Any]:
        outputs = CaseOutputs(self.options.output, case.case_id)
        settings = self.settings(case)
        overwrite = self.options.overwrite
        if outputs.is_complete() and not overwrite:
            previous = outputs.previous_row()
            differences = settings.differences(previous.get("settings"))
            if not differences:
                row = {**previous, "status": "skipped (done earlier)"}
                progress.case_done(outputs.files, skipped=True, settings=previous.get("settings"), **_summary(row))
                return row
            if set(differences) <= set(THRESHOLD_SETTINGS):
                return self._rethreshold(case, outputs, previous, settings, progress)
            what = (f"other settings ({', '.join(differences)} differ)" if "settings" in previous
                    else "an AnomalySeg that did not record its settings")
            raise AnomalySegError(f"{outputs.result_json}: this case was made with {what}; use --overwrite "
                                  "to redo it, or another output folder")
        if outputs.is_interrupted():
            removed = outputs.discard_interrupted()
            log.info("%s: replacing %d file(s) an interrupted run left", case.case_id, len(removed))
        outputs.check_free(overwrite)
        started = time.perf_counter()
        if self.prefetcher is not None:
            prepared = self.prefetcher.take(case)
            progress.update("preprocess", 1.0, "prepared while the previous case ran")
        else:
            prepared = self.segmenter.prepare_file(case.path, self.masks.get(case.case_id), progress.update)
        result = self.segmenter.finish(prepared, self.threshold, progress.update)
        progress.update("write", 0.0, "writing outputs")
        write_started = time.perf_counter()
        outputs.begin_writing(settings.to_dict())
        files = write_case_outputs(result, outputs, overwrite, self.options.save_intermediate)
        result.info.timings.write = time.perf_counter() - write_started
        row = case_row(case, result, settings, time.perf_counter() - started)
        mark_complete(outputs, row, overwrite=True)  # the marker proves the old result file (if any) ours
        progress.case_done(files, **_summary(row), thresholds=result.thresholds)
        return row

    def _rethreshold(self, case: CaseInput, outputs: CaseOutputs, previous: dict[str, Any], settings: CaseSpec,
                     progress: ProgressReporter) -> dict[str, Any]:
        """Apply the new threshold to the case's saved anomaly map; rewrites mask, segmentation, QC picture."""
        started = time.perf_counter()
        timings = StageTimings()
        progress.update("load", 0.0, "re-thresholding the saved anomaly map")
        image = read_volume(case.path)
        reconstruction = read_volume(outputs.path("recon"))
        anomaly_map = read_volume(outputs.path("anomaly_map"))
        timings.load = time.perf_counter() - started
        progress.update("restore", 0.0, f"threshold {self.threshold[0]:.4g}")
        start = time.perf_counter()
        anomaly_mask, findings = self.segmenter.threshold_map(sitk.Cast(anomaly_map, sitk.sitkFloat32),
                                                              self.threshold[0])
        timings.restore = time.perf_counter() - start
        info = CaseInfo(engine_version=__version__, model=settings.model, model_sha256=settings.model_sha256,
                        model_path=str(self.segmenter.bundle.path) if self.segmenter.bundle.path else None,
                        device=str(previous.get("device") or ""), device_name="(the map of an earlier run)",
                        precision=str(previous.get("precision") or ""), seed=settings.seed,
                        preprocessing={"mask_source": previous.get("mask_source"),
                                       "registration": previous.get("registration")},
                        timings=timings)
        result = SegmentationResult(image, reconstruction, anomaly_map, anomaly_mask, self.threshold[0],
                                    self.threshold[1], dict(self.segmenter.thresholds), findings, None, info)
        progress.update("write", 0.0, "writing mask, segmentation and QC picture")
        start = time.perf_counter()
        outputs.begin_writing(settings.to_dict())
        files = write_case_outputs(result, outputs, overwrite=True, roles=RETHRESHOLD_ROLES)
        timings.write = time.perf_counter() - start
        row = case_row(case, result, settings, time.perf_counter() - started)
        row["rethresholded_from"] = previous.get("threshold")
        mark_complete(outputs, row, overwrite=True)
        progress.case_done(files, rethresholded=True, **_summary(row), thresholds=result.thresholds)
        return row


def case_row(case: CaseInput, result: SegmentationResult, settings: CaseSpec, seconds: float) -> dict[str, Any]:
    """The results-table row of one segmented case (also its ``<case>_result.json``)."""
    info = result.info
    return {
        "case": case.case_id,
        "status": "ok",
        "error": None,
        "input": str(case.path),
        "mask_source": info.preprocessing.get("mask_source"),
        **result.findings.as_row(),
        "threshold": result.threshold,
        "threshold_source": result.threshold_source,
        "model": info.model,
        "engine_version": info.engine_version,
        "device": info.device,
        "precision": info.precision,
        "seconds_total": seconds,
        **info.timings.as_columns(),
        "qc_warnings": list(info.qc_warnings),
        "scored_brain_fraction": info.scored_brain_fraction,
        "domain": dict(info.domain),
        **{f"domain_{name}": value for name, value in info.domain.items()},
        "operating_point": dict(info.operating_point),
        "settings": settings.to_dict(),
        "outputs": {role: path.name for role, path in CaseOutputs(Path(), case.case_id).files.items()},
        "registration": info.preprocessing.get("registration"),
    }


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """What the ``case_done`` progress event carries (the Slicer module reads it)."""
    keys = ("volume_ml", "components", "threshold", "threshold_source", "qc_warnings", "device", "precision",
            "operating_point")
    return {key: row.get(key) for key in keys}


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


def _gather(rows: list[dict[str, Any]], context: DistributedContext) -> list[dict[str, Any]]:
    """Every process's rows (on every process); the rows themselves when single-process."""
    if not context.distributed:
        return rows
    import torch.distributed as dist

    gathered: list[list[dict[str, Any]]] = [[] for _ in range(context.world_size)]
    dist.all_gather_object(gathered, rows)
    return [row for part in gathered for row in part]
