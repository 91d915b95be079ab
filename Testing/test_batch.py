"""Batch runs: a failing case among good ones does not stop the others, and every outcome is reported."""

from __future__ import annotations

import logging

import pytest

from AnomalySegLib.batch import CaseOutcome, run_batch
from AnomalySegLib.io import CaseInput, discover_cases, read_volume, validate_volume, write_volume


@pytest.fixture
def cohort(real_data, tmp_path):
    """Four real-derived scans: two good, one truncated file, one all-zero volume."""
    crop = read_volume(real_data("itk_kmeans_t1"))[40:88, 40:88, 20:40]
    folder = tmp_path / "cohort"
    write_volume(crop, folder / "case1.nii.gz")
    whole = write_volume(crop, tmp_path / "whole.nii.gz").read_bytes()
    (folder / "case2.nii.gz").write_bytes(whole[: len(whole) // 2])
    write_volume(crop * 0, folder / "case3.nii.gz")
    write_volume(crop, folder / "case4.nrrd")
    return folder


def threshold_case(output_folder):
    """A real per-case job: read, validate, write a thresholded copy."""

    def process(case: CaseInput) -> None:
        image = read_volume(case.path)
        validate_volume(image, case.path)
        write_volume(image > 100, output_folder / f"{case.case_id}_mask.nrrd")

    return process


def test_failing_cases_do_not_stop_the_batch(cohort, tmp_path):
    progress: list[tuple[int, int, CaseOutcome]] = []
    report = run_batch(discover_cases(cohort), threshold_case(tmp_path / "out"),
                       on_progress=lambda done, total, outcome: progress.append((done, total, outcome)))
    assert [outcome.case_id for outcome in report.outcomes] == ["case1", "case2", "case3", "case4"]
    assert [outcome.ok for outcome in report.outcomes] == [True, False, False, True]
    assert not report.all_ok
    assert [outcome.case_id for outcome in report.failed] == ["case2", "case3"]
    assert report.failed[0].error.startswith(f"{cohort / 'case2.nii.gz'}: is truncated")
    assert report.failed[1].error == f"{cohort / 'case3.nii.gz'}: is all zero (an empty volume)"
    assert all(outcome.seconds > 0 for outcome in report.outcomes)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case1_mask.nrrd", "case4_mask.nrrd"]
    assert [(done, total) for done, total, _ in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [outcome for _, _, outcome in progress] == list(report.outcomes)
    assert report.summary().startswith("2 of 4 cases done in ")
    assert report.summary().endswith("; 2 failed: case2, case3")


def test_bugs_are_reported_as_internal_errors_with_traceback_in_debug_log(caplog):
    def process(case_id: str) -> None:
        if case_id == "b":
            {}["missing key"]

    with caplog.at_level(logging.DEBUG, logger="AnomalySegLib.batch"):
        report = run_batch(["a", "b", "c"], process)
    assert [outcome.ok for outcome in report.outcomes] == [True, False, True]
    assert report.failed[0].error == "internal error: KeyError: 'missing key'"
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].levelno == logging.DEBUG
    assert "b: failed: internal error" in caplog.text


def test_keyboard_interrupt_stops_the_batch():
    processed = []

    def process(case_id: str) -> None:
        processed.append(case_id)
        if case_id == "b":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(["a", "b", "c"], process)
    assert processed == ["a", "b"]


def test_all_ok_report():
    report = run_batch(["only"], lambda case: None)
    assert report.all_ok and report.failed == []
    assert report.summary().startswith("1 of 1 case done in ")
