"""Training a stage within a wall-clock budget, resumably (the default-model recipe uses it).

:class:`StageBudget` calls a stage's training function in chunks of steps: the first chunk
(``first_chunk_steps``) measures the seconds per step, and every later chunk is sized to fit the time
left (at most ``chunk_seconds``), so the stage ends within its budget on any machine; the last chunk's
result is returned. ``max_steps`` also stops it at a step count (a run reproduced by steps on a machine of
another speed or load). Steps come from the stage's checkpoint and the time spent from ``<work>/budget.json``,
so an interrupted run resumes with the time it already used counted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from AnomalySegLib.training.checkpoint import CHECKPOINT_FILE, load_checkpoint

LOG = logging.getLogger(__name__)
BUDGET_FILE = "budget.json"


class StageBudget:
    """Trains one stage in chunks so that it ends within ``budget_s`` seconds.

    The seconds per step are measured again in every process (a resumed run may run on another
    machine); time after the last chunk of an interrupted run is lost, so a resumed stage may run a
    little longer than its budget. ``state``: ``{"steps", "seconds", "done"}``, saved in ``budget.json``.
    """

    def __init__(self, name: str, work_dir: Path, budget_s: float, *, chunk_seconds: float = 600.0,
                 first_chunk_steps: int = 10, max_steps: int | None = None) -> None:
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"{name}: max_steps must be >= 1, got {max_steps}")
        self.name = name
        self.max_steps = max_steps
        self.work_dir = Path(work_dir)
        self.state_path = self.work_dir / BUDGET_FILE
        self.budget_s = budget_s
        self.chunk_seconds = chunk_seconds
        self.first_chunk_steps = first_chunk_steps
        self.state: dict[str, Any] = {"steps": 0, "seconds": 0.0, "done": False}
        if self.state_path.is_file():
            self.state = json.loads(self.state_path.read_text(encoding="utf-8"))
        if (self.work_dir / CHECKPOINT_FILE).is_file():
            self.state["steps"] = int(load_checkpoint(self.work_dir / CHECKPOINT_FILE)["step"])

    def run(self, train: Callable[[int, bool], tuple[Any, Any]]) -> tuple[Any, Any]:
        """``train(max_steps, resume)`` → ``(bundle, outcome)`` with ``outcome.step``; called until the
        budget is used up. Returns the last call's result."""
        result = None
        seconds_per_step = None
        while True:
            remaining = self.budget_s - self.state["seconds"]
            if seconds_per_step is None:
                target = self.state["steps"] + self.first_chunk_steps
            else:
                more = int(min(remaining, self.chunk_seconds) / seconds_per_step)
                if more < 1:
                    break
                target = self.state["steps"] + more
            if self.max_steps is not None:
                if result is not None and self.state["steps"] >= self.max_steps:
                    break
                target = min(target, self.max_steps)
            start = time.perf_counter()
            result = train(target, self.state["steps"] > 0)
            elapsed = time.perf_counter() - start
            seconds_per_step = elapsed / max(result[1].step - self.state["steps"], 1)
            self.state["seconds"] += elapsed
            self.state["steps"] = result[1].step
            self.save()
            LOG.info("%s: step %d, %.2f s/step, %.0f of %.0f s used", self.name, self.state["steps"],
                     seconds_per_step, self.state["seconds"], self.budget_s)
        return result

    def mark_done(self) -> None:
        """Record that the stage's result is saved (a resumed recipe skips the stage)."""
        self.state["done"] = True
        self.save()

    def save(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(self.state), encoding="utf-8")
