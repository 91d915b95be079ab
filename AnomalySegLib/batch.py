"""Process many cases so that one failing case does not stop the others.

``run_batch(cases, process)`` calls ``process(case)`` for each case in turn and records what happened.
A problem the user can fix (:class:`~AnomalySegLib.errors.AnomalySegError`) is reported with its
message; any other exception is a bug, reported as ``internal error: ...`` with its traceback in the
debug log. Ctrl-C (:class:`KeyboardInterrupt`) stops the batch as usual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from AnomalySegLib.errors import AnomalySegError

log = logging.getLogger(__name__)

Case = TypeVar("Case")


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one case: ``error`` is ``None`` when it succeeded; ``seconds`` of wall time."""

    case_id: str
    ok: bool
    error: str | None
    seconds: float


@dataclass(frozen=True)
class BatchReport:
    """Outcomes of a batch, in processing order."""

    outcomes: tuple[CaseOutcome, ...]

    @property
    def all_ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)

    @property
    def failed(self) -> list[CaseOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def seconds(self) -> float:
        return sum(outcome.seconds for outcome in self.outcomes)

    def summary(self) -> str:
        """One line, e.g. ``3 of 4 cases done in 12.5 s; 1 failed: case2``."""
        total = len(self.outcomes)
        done = total - len(self.failed)
        line = f"{done} of {total} case{'s' if total != 1 else ''} done in {self.seconds:.1f} s"
        if self.failed:
            line += f"; {len(self.failed)} failed: {', '.join(outcome.case_id for outcome in self.failed)}"
        return line


def run_batch(cases: Sequence[Case], process: Callable[[Case], object], *,
              on_progress: Callable[[int, int, CaseOutcome], None] | None = None) -> BatchReport:
    """Call ``process(case)`` for every case, keep going when one fails, and report each outcome.

    Args:
        cases: the cases, e.g. :class:`~AnomalySegLib.io.case_inputs.CaseInput`; a case's id is its
            ``case_id`` attribute if it has one, else ``str(case)``.
        process: does the work for one case; its return value is ignored.
        on_progress: called after each case with (cases finished, number of cases, outcome).

    Raises:
        KeyboardInterrupt: passed on at once; the case in progress is not recorded.
    """
    outcomes = []
    for index, case in enumerate(cases, start=1):
        case_id = str(getattr(case, "case_id", case))
        started = time.perf_counter()
        error = None
        try:
            process(case)
        except AnomalySegError as problem:
            error = str(problem)
        except Exception as bug:  # a bug must not stop the other cases; its traceback goes to the log
            log.debug("%s: internal error", case_id, exc_info=True)
            error = f"internal error: {type(bug).__name__}: {bug}"
        outcome = CaseOutcome(case_id, error is None, error, time.perf_counter() - started)
        outcomes.append(outcome)
        if error is None:
            log.info("[%d/%d] %s: done in %.1f s", index, len(cases), case_id, outcome.seconds)
        else:
            log.error("[%d/%d] %s: failed: %s", index, len(cases), case_id, error)
        if on_progress is not None:
            on_progress(index, len(cases), outcome)
    report = BatchReport(tuple(outcomes))
    log.info("%s", report.summary())
    return report
