"""Progress of long engine runs: a bar for people, JSON lines for programs (the Slicer module).

``--progress-format tty`` draws one tqdm bar on stderr. ``--progress-format json`` writes one JSON
object per line on stdout, flushed at once, so that a parent process (the Slicer module runs
``PythonSlicer -m AnomalySegLib segment ... --progress-format json``) can follow the run; logging
stays on stderr. The protocol, version :data:`PROTOCOL_VERSION`::

    {"event": "start", "protocol": 1, "command": "segment", "cases": 3, "device": "cuda:0", "precision": "bf16"}
    {"event": "progress", "case": "sub-01", "case_index": 0, "cases": 3, "stage": "reconstruct",
     "fraction": 0.21, "message": "slice 20/50"}
    {"event": "case_done", "case": "sub-01", "case_index": 0, "cases": 3, "fraction": 0.333,
     "outputs": {"anomaly_map": "/out/sub-01_anomaly_map.nii.gz", ...}, "volume_ml": 12.5, ...}
    {"event": "error", "case": "sub-02", "message": "sub-02.nii.gz: not a 3D image"}
    {"event": "done", "cases_ok": 2, "cases_failed": 1, "fraction": 1.0}

``fraction`` is the progress of the whole run in [0, 1] (what a progress bar shows). ``case_done``
carries the written files under ``outputs`` (role → path) and whatever summary the command adds
(``segment``: ``volume_ml``, ``findings``, ``threshold`` used, the model's preset ``thresholds``,
``qc_warnings``; a case finished by an earlier run has ``"skipped": true`` and the ``settings`` it
was made with).
An ``error`` with a case means that case failed and the run goes on; with ``"case": null`` the run
itself failed. Readers ignore keys they do not know; :func:`parse_progress_line` turns a line back
into a :class:`ProgressEvent` (or ``None`` for any other output).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TextIO

from AnomalySegLib.case_info import SEGMENT_STAGE_NAMES

if TYPE_CHECKING:
    from tqdm import tqdm

PROTOCOL_VERSION = 1
PROGRESS_FORMATS = ("tty", "json")
EVENTS = ("start", "progress", "case_done", "error", "done")

# Stages of ``segment`` (names: :data:`AnomalySegLib.case_info.SEGMENT_STAGE_NAMES`) and their share
# of one case's time, estimated from the CPU timings of the CPU-sized model (docs/design.md, "Measured costs the code relies on"):
# preprocessing ~6 s of CPU (N4 ~3 s, registration ~4 s on its 4/2 mm pyramid), the three denoiser passes
# ~6 s, the SegUnet passes ~4 s, scoring and restoring a few seconds.
_SEGMENT_STAGE_SHARES = (0.03, 0.30, 0.30, 0.20, 0.05, 0.08, 0.04)
SEGMENT_STAGES: dict[str, float] = dict(zip(SEGMENT_STAGE_NAMES, _SEGMENT_STAGE_SHARES, strict=True))


@dataclass(frozen=True)
class ProgressEvent:
    """One protocol line, parsed. ``fields`` holds the whole JSON object (outputs, summaries, ...)."""

    event: str
    case: str | None = None
    stage: str | None = None
    fraction: float | None = None
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def parse_progress_line(line: str | bytes) -> ProgressEvent | None:
    """The event of one line of a ``--progress-format json`` run, or ``None`` if it is not one.

    Anything that is not a JSON object with a known ``event`` (a stray print, a warning, a
    truncated line) gives ``None``, so callers can show such lines as log text.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("event") not in EVENTS:
        return None
    fraction = obj.get("fraction")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            return None
        fraction = float(fraction)
    case = obj.get("case")
    stage = obj.get("stage")
    return ProgressEvent(
        event=obj["event"],
        case=None if case is None else str(case),
        stage=None if stage is None else str(stage),
        fraction=fraction,
        message=str(obj.get("message") or ""),
        fields=obj,
    )


class ProgressReporter:
    """Reports the progress of a run over ``cases`` cases, each going through ``stages`` in order.

    Use as a context manager; the engine calls :meth:`start_case`, then :meth:`update` as work
    advances (``fraction`` within the current stage), then :meth:`case_done` or
    :meth:`case_failed`; leaving the block reports ``done``. Example::

        with ProgressReporter("json", cases=len(inputs)) as progress:
            for case_id, path in inputs:
                progress.start_case(case_id)
                progress.update("reconstruct", 20 / 50, "slice 20/50")
                progress.case_done({"anomaly_map": out / f"{case_id}_anomaly_map.nii.gz"}, volume_ml=1.5)

    Args:
        progress_format: ``"tty"`` (tqdm bar on ``tty_stream``, default stderr) or ``"json"``
            (protocol lines on ``json_stream``, default stdout).
        cases: number of cases the run will process (≥ 1).
        stages: stage name → relative share of a case's time; order is the order of work.
        command: the command name reported in the ``start`` event.
        run_info: more fields of the ``start`` event (``segment``: ``device``, ``precision``).
    """

    def __init__(
        self,
        progress_format: str,
        cases: int,
        stages: Mapping[str, float] = SEGMENT_STAGES,
        command: str = "segment",
        json_stream: TextIO | None = None,
        tty_stream: TextIO | None = None,
        run_info: Mapping[str, Any] | None = None,
    ) -> None:
        if progress_format not in PROGRESS_FORMATS:
            raise ValueError(f"progress format {progress_format!r} is not one of {PROGRESS_FORMATS}")
        if cases < 1:
            raise ValueError(f"a run needs at least one case, got {cases}")
        total = sum(stages.values())
        if not stages or total <= 0 or any(w < 0 for w in stages.values()):
            raise ValueError("stages need non-negative shares with a positive sum")
        self.progress_format = progress_format
        self.cases = cases
        self._stage_start: dict[str, float] = {}
        self._stage_share: dict[str, float] = {}
        start = 0.0
        for name, weight in stages.items():
            self._stage_start[name] = start / total
            self._stage_share[name] = weight / total
            start += weight
        self._json_stream = json_stream
        self._bar: tqdm | None = None
        self._log_redirect = contextlib.ExitStack()
        if progress_format == "tty":
            # Imported here: the Slicer module parses progress lines before the engine's packages exist.
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # While the bar is drawn, console log lines go through tqdm.write, which lifts the bar,
            # writes the line and redraws the bar below it (else both share one line).
            self._log_redirect.enter_context(logging_redirect_tqdm(tqdm_class=tqdm))
            self._bar = tqdm(total=cases, unit="case", file=tty_stream or sys.stderr, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} cases [{elapsed}<{remaining}{postfix}]")
        self._case: str | None = None
        self._case_index = -1
        self._ok = 0
        self._failed = 0
        self._fraction = 0.0
        self._closed = False
        self._emit({"event": "start", "protocol": PROTOCOL_VERSION, "command": command, "cases": cases,
                    **_jsonable(run_info or {})})

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            self.fail(str(exc) or type(exc).__name__)
        self.close()

    @property
    def fraction(self) -> float:
        """Progress of the whole run in [0, 1] as last reported."""
        return self._fraction

    def start_case(self, case_id: str) -> None:
        """Begin the next case (cases are processed in order)."""
        if self._case_index + 1 >= self.cases:
            raise ValueError(f"case {case_id!r} is beyond the {self.cases} announced cases")
        self._case_index += 1
        self._case = case_id
        self._set_fraction(self._case_index / self.cases)
        if self._bar is not None:
            self._bar.set_description_str(case_id, refresh=False)

    def update(self, stage: str, fraction: float = 0.0, message: str = "") -> None:
        """The current case is ``fraction`` (0..1) through ``stage``."""
        if self._case is None:
            raise ValueError("update() before start_case()")
        if stage not in self._stage_start:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(self._stage_start)}")
        within = self._stage_start[stage] + self._stage_share[stage] * min(max(fraction, 0.0), 1.0)
        self._set_fraction((self._case_index + within) / self.cases)
        if self._bar is not None:
            self._bar.set_postfix_str(f"{stage} {message}".strip(), refresh=False)
            self._bar.refresh()
        self._emit({"event": "progress", "case": self._case, "case_index": self._case_index,
                    "cases": self.cases, "stage": stage, "fraction": self._fraction, "message": message})

    def case_done(self, outputs: Mapping[str, str | Path], **summary: Any) -> None:
        """The current case finished; ``outputs`` maps roles to written files, ``summary`` adds JSON fields."""
        case = self._require_case()
        self._ok += 1
        self._set_fraction((self._case_index + 1) / self.cases)
        self._emit({"event": "case_done", "case": case, "case_index": self._case_index, "cases": self.cases,
                    "fraction": self._fraction, "outputs": {k: str(v) for k, v in outputs.items()},
                    **_jsonable(summary)})
        self._case = None

    def case_failed(self, message: str) -> None:
        """The current case failed with ``message`` (one line); the run goes on with the next case."""
        case = self._require_case()
        self._failed += 1
        self._set_fraction((self._case_index + 1) / self.cases)
        self._emit({"event": "error", "case": case, "message": message})
        if self._bar is not None:
            self._bar.write(f"{case}: failed: {message}")
        self._case = None

    def fail(self, message: str) -> None:
        """The run itself failed (not one case): an ``error`` event without a case."""
        self._emit({"event": "error", "case": None, "message": message})

    def close(self) -> None:
        """Report ``done`` (once) and close the bar."""
        if self._closed:
            return
        self._closed = True
        done_fraction = 1.0 if self._ok + self._failed == self.cases else self._fraction
        self._emit({"event": "done", "cases_ok": self._ok, "cases_failed": self._failed,
                    "fraction": done_fraction})
        if self._bar is not None:
            self._bar.close()
        self._log_redirect.close()

    def _require_case(self) -> str:
        if self._case is None:
            raise ValueError("no case in progress (call start_case() first)")
        return self._case

    def _set_fraction(self, value: float) -> None:
        # Never go back: a stage reported out of order must not make the bar jump backwards.
        self._fraction = max(self._fraction, min(value, 1.0))
        if self._bar is not None:
            self._bar.n = self._fraction * self.cases

    def _emit(self, obj: dict[str, Any]) -> None:
        if self.progress_format != "json":
            return
        stream = self._json_stream or sys.stdout
        stream.write(json.dumps(obj, allow_nan=False) + "\n")
        stream.flush()


def _jsonable(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Summary values as JSON: paths as strings, numpy scalars as numbers, NaN/inf as ``None``."""
    result: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, Path):
            value = str(value)
        elif hasattr(value, "item") and callable(value.item):  # numpy scalar or 0-d array/tensor
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif isinstance(value, Mapping):
            value = _jsonable(value)
        result[key] = value
    return result
