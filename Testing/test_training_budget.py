"""StageBudget: a stage trained in chunks within a wall-clock budget, optionally stopped at a step count."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from AnomalySegLib.training.budget import BUDGET_FILE, StageBudget


class InstantStage:
    """A stage whose steps take no time: ``train(max_steps, resume)`` reaches ``max_steps`` at once (the
    real trainers are exercised by test_train_seg / test_train_recon; this checks the chunking alone)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []

    def __call__(self, max_steps: int, resume: bool):
        self.calls.append((max_steps, resume))
        return f"bundle@{max_steps}", SimpleNamespace(step=max_steps)


def test_max_steps_stops_a_stage_that_still_has_time(tmp_path):
    stage = InstantStage()
    bundle, outcome = StageBudget("Stage II", tmp_path, budget_s=3600, max_steps=25).run(stage)
    assert outcome.step == 25 and bundle == "bundle@25"
    assert stage.calls == [(10, False), (25, True)]  # the first chunk measures, the next stops at the cap
    assert json.loads((tmp_path / BUDGET_FILE).read_text())["steps"] == 25
    # Resumed after the cap: no further training, the stage's result at its step is returned.
    again = InstantStage()
    bundle, outcome = StageBudget("Stage II", tmp_path, budget_s=3600, max_steps=25).run(again)
    assert outcome.step == 25 and again.calls == [(25, True)]


def test_max_steps_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_steps"):
        StageBudget("Stage I", tmp_path, budget_s=60, max_steps=0)
