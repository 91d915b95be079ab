"""The JSON progress protocol between the engine and the Slicer module (AnomalySegLib.progress)."""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from AnomalySegLib.progress import (
    PROTOCOL_VERSION,
    SEGMENT_STAGES,
    ProgressReporter,
    parse_progress_line,
)


def _events(stream: io.StringIO):
    lines = stream.getvalue().splitlines()
    events = [parse_progress_line(line) for line in lines]
    assert all(e is not None for e in events), lines
    return events


def test_json_run_reports_every_case_in_order_with_growing_fraction():
    out = io.StringIO()
    with ProgressReporter("json", cases=2, json_stream=out) as progress:
        progress.start_case("tumour")
        for stage in SEGMENT_STAGES:
            progress.update(stage, 0.5, f"half of {stage}")
        progress.case_done({"anomaly_map": Path("/out/tumour_anomaly_map.nii.gz")},
                           volume_ml=np.float32(12.5), findings=np.int64(2), thresholds={"fpr5": np.float64(0.3)})
        progress.start_case("broken")
        progress.update("load", 0.0)
        progress.case_failed("broken.nii.gz: not a 3D image")

    events = _events(out)
    kinds = [e.event for e in events]
    assert kinds == ["start"] + ["progress"] * len(SEGMENT_STAGES) + ["case_done", "progress", "error", "done"]
    assert events[0].fields == {"event": "start", "protocol": PROTOCOL_VERSION, "command": "segment", "cases": 2}

    fractions = [e.fraction for e in events if e.fraction is not None]
    assert fractions == sorted(fractions) and 0.0 < fractions[0] and fractions[-1] == 1.0
    progress_events = [e for e in events if e.event == "progress"]
    assert [e.stage for e in progress_events[:-1]] == list(SEGMENT_STAGES)
    assert all(e.case == "tumour" for e in progress_events[:-1]) and progress_events[-1].case == "broken"
    assert progress_events[0].message == "half of load"
    # Half through the first case's last stage is just under half of the run.
    assert 0.45 < progress_events[len(SEGMENT_STAGES) - 1].fraction < 0.5

    done = events[len(SEGMENT_STAGES) + 1]
    assert done.case == "tumour" and done.fraction == 0.5
    assert done.fields["outputs"] == {"anomaly_map": "/out/tumour_anomaly_map.nii.gz"}
    assert done.fields["volume_ml"] == 12.5 and done.fields["findings"] == 2
    assert done.fields["thresholds"] == {"fpr5": 0.3}
    assert events[-2].case == "broken" and events[-2].message == "broken.nii.gz: not a 3D image"
    assert events[-1].fields["cases_ok"] == 1 and events[-1].fields["cases_failed"] == 1


def test_an_exception_inside_the_run_is_reported_as_a_run_error_then_done():
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with ProgressReporter("json", cases=1, json_stream=out) as progress:
            progress.start_case("a")
            raise RuntimeError("out of memory")
    events = _events(out)
    assert [e.event for e in events] == ["start", "error", "done"]
    assert events[1].case is None and events[1].message == "out of memory"
    assert events[2].fields["cases_ok"] == 0 and events[2].fraction == 0.0


def test_tty_format_draws_a_bar_on_its_stream_and_writes_nothing_to_stdout(capsys):
    bar = io.StringIO()
    with ProgressReporter("tty", cases=1, tty_stream=bar) as progress:
        progress.start_case("mrbraintumor1")
        progress.update("reconstruct", 0.5, "slice 25/50")
        progress.case_done({})
    assert capsys.readouterr().out == ""
    text = bar.getvalue()
    assert "mrbraintumor1" in text and "reconstruct slice 25/50" in text and "1.00/1 cases" in text


@pytest.mark.parametrize("line", [
    "",
    "INFO preprocessing: N4 bias correction",
    "{not json",
    '{"event": "unknown"}',
    '["progress"]',
    '{"event": "progress", "fraction": 1.5}',
    '{"event": "progress", "fraction": true}',
    '{"event": "progress", "fraction": "half"}',
    '{"message": "no event"}',
])
def test_lines_that_are_not_protocol_events_parse_to_none(line):
    assert parse_progress_line(line) is None


def test_parse_accepts_bytes_and_keeps_unknown_keys():
    event = parse_progress_line(b'{"event": "progress", "case": 7, "stage": "score", "fraction": 1, "extra": [1]}\r\n')
    assert event is not None
    assert (event.event, event.case, event.stage, event.fraction, event.message) == ("progress", "7", "score", 1.0, "")
    assert event.fields["extra"] == [1]


def test_programming_errors_are_refused():
    with pytest.raises(ValueError, match="progress format"):
        ProgressReporter("xml", cases=1)
    with pytest.raises(ValueError, match="at least one case"):
        ProgressReporter("json", cases=0, json_stream=io.StringIO())
    progress = ProgressReporter("json", cases=1, json_stream=io.StringIO())
    with pytest.raises(ValueError, match="before start_case"):
        progress.update("load")
    progress.start_case("a")
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        progress.update("train")
    progress.case_done({})
    with pytest.raises(ValueError, match="beyond the 1 announced"):
        progress.start_case("b")


def test_each_line_reaches_a_parent_process_while_the_child_is_still_running():
    """A real child process: its lines must arrive flushed, before it exits (the Slicer module's case)."""
    child_code = textwrap.dedent("""
        import sys
        from AnomalySegLib.progress import ProgressReporter
        progress = ProgressReporter("json", cases=1)
        progress.start_case("case")
        progress.update("preprocess", 0.5, "N4")
        sys.stdin.readline()  # wait until the parent has seen both lines
        progress.case_done({})
        progress.close()
    """)
    child = subprocess.Popen([sys.executable, "-c", child_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, encoding="utf-8")
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True).start()
        seen = []
        while len(seen) < 2:
            # Deadlock guard only: unflushed output would never arrive while the child waits on stdin.
            try:
                seen.append(parse_progress_line(lines.get(timeout=120)))
            except queue.Empty:
                pytest.fail(f"no flushed progress line arrived; got {seen}")
        assert [e.event for e in seen] == ["start", "progress"] and seen[1].message == "N4"
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait() == 0
        rest = [parse_progress_line(lines.get(timeout=120)) for _ in range(2)]
        assert [e.event for e in rest] == ["case_done", "done"]
    finally:
        child.stdin.close()
        child.wait()


def test_protocol_lines_are_strict_json():
    out = io.StringIO()
    with ProgressReporter("json", cases=1, json_stream=out) as progress:
        progress.start_case("a")
        progress.case_done({}, volume_ml=float("nan"))
    for line in out.getvalue().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert _events(out)[1].fields["volume_ml"] is None


# --- the Slicer module's side: AnomalySeg/AnomalySegModuleLib/InferenceProcess.py (plain Python) ---

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "AnomalySeg"))
from AnomalySegModuleLib.InferenceProcess import InferenceProcess, engineEnvironment, segmentCommand  # noqa: E402


def test_segment_command_follows_the_cli_contract(tmp_path):
    command = segmentCommand("/slicer/bin/PythonSlicer", tmp_path / "in.nii.gz", tmp_path / "out", model="sadm-cpu",
                             maskPath=tmp_path / "mask.nii.gz", device="cpu", threshold="fpr5",
                             saveIntermediate=True)
    assert command == ["/slicer/bin/PythonSlicer", "-m", "AnomalySegLib", "segment", str(tmp_path / "in.nii.gz"),
                       "-o", str(tmp_path / "out"), "--device", "cpu", "--progress-format", "json",
                       "--model", "sadm-cpu", "--mask", str(tmp_path / "mask.nii.gz"), "--threshold", "fpr5",
                       "--save-intermediate"]
    assert "--mask" not in segmentCommand("python", Path("a.nii"), Path("o"))


def test_runner_delivers_events_and_log_lines_of_a_real_child_in_order(tmp_path):
    child_code = textwrap.dedent("""
        import logging, sys
        from AnomalySegLib.progress import ProgressReporter
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
        with ProgressReporter("json", cases=1) as progress:
            progress.start_case("input")
            logging.info("registering to the atlas")
            print("a stray print")
            progress.update("preprocess", 1.0, "done")
            progress.case_done({"anomaly_map": "input_anomaly_map.nii.gz"}, volume_ml=3.5, threshold=0.42)
    """)
    events, logs = [], []
    runner = InferenceProcess(onEvent=events.append, onLog=logs.append)
    runner.start([sys.executable, "-c", child_code], environment=engineEnvironment({"PATH": os.environ["PATH"]}),
                 workingFolder=tmp_path)
    assert runner.wait(0.02) == 0 and not runner.cancelled
    assert [e.event for e in events] == ["start", "progress", "case_done", "done"]
    assert events[2].fields["threshold"] == 0.42 and events[2].case == "input"
    # stdout and stderr are two pipes: the order of lines across them is not defined.
    assert sorted(logs) == ["INFO registering to the atlas", "a stray print"]
    assert not runner.poll()


def test_engine_environment_puts_the_engine_first_on_pythonpath():
    import AnomalySegLib

    environment = engineEnvironment({"PYTHONPATH": os.pathsep.join(["/elsewhere", ""])})
    parts = environment["PYTHONPATH"].split(os.pathsep)
    assert parts == [str(Path(AnomalySegLib.__file__).resolve().parent.parent), "/elsewhere"]
    assert environment["PYTHONUNBUFFERED"] == "1"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has already stopped
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc")
def test_cancel_kills_the_child_and_the_processes_it_started():
    child_code = textwrap.dedent("""
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"grandchild {grandchild.pid}", flush=True)
        time.sleep(600)
    """)
    logs = []
    runner = InferenceProcess(onLog=logs.append)
    runner.start([sys.executable, "-c", child_code])
    deadline = time.monotonic() + 120  # deadlock guard only, not a speed requirement
    while not logs and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    assert logs and logs[0].startswith("grandchild "), logs
    grandchild = int(logs[0].split()[1])
    child = runner.process.pid
    assert _alive(child) and _alive(grandchild)
    runner.cancel()
    assert runner.cancelled and runner.returncode == -signal.SIGTERM
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child) and not _alive(grandchild)
    runner.cancel()  # cancelling a finished run is harmless


def test_log_lines_do_not_share_a_line_with_the_tty_bar(monkeypatch):
    # The console handler of ``anomalyseg`` logs to stderr, where the bar is drawn: each log line must
    # start on a line of its own, not after the bar's text.
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(root, "level", logging.INFO)
    try:
        with ProgressReporter("tty", cases=2) as progress:
            progress.start_case("case1")
            progress.update("reconstruct", 0.5)
            logging.getLogger("AnomalySegLib.test").info("halfway through case1")
        assert handler in root.handlers  # the console handler is back once the bar is gone
    finally:
        root.removeHandler(handler)
    lines = [line.split("\r")[-1] for line in stderr.getvalue().split("\n")]
    assert "INFO AnomalySegLib.test: halfway through case1" in lines
