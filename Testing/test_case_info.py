"""Per-case records: one set of stage names, and what a re-run compares."""

from __future__ import annotations

import dataclasses

from AnomalySegLib.case_info import SEGMENT_STAGE_NAMES, THRESHOLD_SETTINGS, CaseSpec, StageTimings
from AnomalySegLib.progress import SEGMENT_STAGES

SETTINGS = CaseSpec(model="m", model_sha256="a" * 64, threshold=0.4, threshold_source="val", seed=0, mask=None,
                        save_intermediate=False)


def test_progress_stages_are_the_timed_stages():
    assert tuple(SEGMENT_STAGES) == SEGMENT_STAGE_NAMES
    assert list(StageTimings().as_columns()) == [f"seconds_{name}" for name in SEGMENT_STAGE_NAMES]


def test_settings_differences():
    recorded = SETTINGS.to_dict()
    assert SETTINGS.differences(recorded) == []
    assert dataclasses.replace(SETTINGS, threshold=0.5, threshold_source="user").differences(recorded) == \
        list(THRESHOLD_SETTINGS)
    assert dataclasses.replace(SETTINGS, model_sha256="b" * 64, seed=3).differences(recorded) == ["model_sha256", "seed"]
    assert SETTINGS.differences(None) == [field.name for field in dataclasses.fields(CaseSpec)]


def test_intermediates_made_earlier_serve_a_run_without_them():
    with_intermediates = dataclasses.replace(SETTINGS, save_intermediate=True)
    assert SETTINGS.differences(with_intermediates.to_dict()) == []
    assert with_intermediates.differences(SETTINGS.to_dict()) == ["save_intermediate"]
