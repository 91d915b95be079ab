"""``anomalyseg segment`` on bad output folders, bad bundles, odd volumes, re-runs and resumed runs.

Everything goes through the real CLI on real files: ``python -m AnomalySegLib`` in a subprocess where
the process itself is what is tested (one stderr line, no traceback, exit status), ``cli.main``
in-process where the same message and exit status are checked more cheaply (``main`` prints exactly what
the process prints). The model is the tiny trained
bundle of conftest.py where a case must be segmented, the bundled default model where only its
``model.json`` matters.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.cli import main
from AnomalySegLib.cli_common import EXIT_OK, EXIT_SOME_CASES_FAILED, EXIT_USER_ERROR
from AnomalySegLib.device import autocast_dtype, choose_device, precision_name
from AnomalySegLib.errors import OutputError
from AnomalySegLib.io.atomic import atomic_folder, atomic_write_text
from AnomalySegLib.io.validation import MAX_VOXELS, MIN_FIELD_OF_VIEW_MM
from AnomalySegLib.pipeline import default_model_path
from AnomalySegLib.progress import SEGMENT_STAGES, parse_progress_line

REPO = Path(__file__).resolve().parents[1]
CASE = "tumour"


def cli(*arguments: str | Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m AnomalySegLib ARGUMENTS`` with this checkout first on the path."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "AnomalySegLib", *map(str, arguments)], capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout, env=environment, cwd=REPO)


def one_error_line(completed: subprocess.CompletedProcess) -> str:
    """The one stderr line of a refused run (no traceback)."""
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert len(lines) == 1, completed.stderr[-3000:]
    return lines[0]


def one_error_line_in_process(arguments: list[str | Path], capsys) -> str:
    """The one stderr line of a run of ``cli.main`` refused with the user-error status."""
    capsys.readouterr()
    status = main([str(argument) for argument in arguments])
    stderr = capsys.readouterr().err
    assert status == EXIT_USER_ERROR, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
    return lines[0]


def events(stdout: str) -> list:
    return [event for event in map(parse_progress_line, stdout.splitlines()) if event is not None]


def results(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "results.csv").open(encoding="utf-8") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


# --- output folders that cannot be used (#11.3) -------------------------------------------------------


def test_output_naming_an_existing_file_is_one_line(tmp_path, real_data):
    target = tmp_path / "results.txt"
    target.write_text("not a folder", encoding="utf-8")
    completed = cli("segment", real_data("mrbraintumor1"), "-o", target, "--device", "cpu")
    assert completed.returncode == EXIT_USER_ERROR
    line = one_error_line(completed)
    assert str(target) in line and "is a file, not a folder" in line
    assert target.read_text(encoding="utf-8") == "not a folder"


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs, where nobody (not even root) "
                    "can create folders or files")
@pytest.mark.parametrize("output, problem", [("/sys/kernel/anomalyseg-out", "cannot be created"),
                                             ("/sys/kernel", "cannot be written into")])
def test_unwritable_output_folder_is_one_line(output, problem, real_data, capsys):
    line = one_error_line_in_process(["segment", real_data("mrbraintumor1"), "-o", output, "--device", "cpu"], capsys)
    assert output in line and problem in line


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_atomic_writes_into_an_unwritable_folder_raise_one_clear_error():
    """What a case meets when its folder stops being writable mid-run: an OutputError, not an OSError."""
    with pytest.raises(OutputError, match=r"^/sys/kernel/x\.json: cannot be written \("):
        atomic_write_text("/sys/kernel/x.json", "{}")
    with pytest.raises(OutputError, match=r"^/sys/kernel/anomalyseg_model_space: cannot be written \("):
        with atomic_folder("/sys/kernel/anomalyseg_model_space"):
            pass


# --- model.json validated as a whole against its schema (#11.3, #14.6) ---------------------------------


@pytest.mark.parametrize("damage, named", [
    (lambda d: d["components"]["recon"].update(weights=3), "components.recon.weights must be a string"),
    (lambda d: d.update(components=[d["components"]["recon"]]), "components must be an object, not a list"),
    (lambda d: d["components"]["seg"].pop("sha256"), "components.seg.sha256 is missing"),
    (lambda d: d.update(noise_levels="250"), "noise_levels must be a non-empty list"),
    (lambda d: d["scoring"].update(thresholds={"val": "high"}), "scoring.thresholds.val must be a finite number"),
    (lambda d: d.update(preprocessing=[]), "preprocessing must be an object"),
])
def test_model_json_of_wrong_types_is_one_line_naming_the_key(damage, named, tmp_path, real_data, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(default_model_path(), bundle)
    description = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    damage(description)
    (bundle / "model.json").write_text(json.dumps(description), encoding="utf-8")
    line = one_error_line_in_process(["segment", real_data("mrbraintumor1"), "-o", tmp_path / "out", "--model",
                                      bundle, "--device", "cpu"], capsys)
    assert "model.json" in line and named in line


# --- volumes that cannot be brain scans (#11.6, #11.7) -------------------------------------------------


def write_tiny_volume(path: Path) -> Path:
    """8×8×8 voxels of 1 mm with varied intensities."""
    rng = np.random.default_rng(0)
    sitk.WriteImage(sitk.GetImageFromArray(rng.uniform(0, 100, (8, 8, 8)).astype(np.float32)), str(path))
    return path


def test_tiny_volume_is_too_small_to_be_a_brain_scan(tmp_path, tiny_bundle):
    write_tiny_volume(tmp_path / "tiny.nii.gz")
    status = main(["segment", str(tmp_path / "tiny.nii.gz"), "-o", str(tmp_path / "out"), "--model",
                   str(tiny_bundle), "--device", "cpu"])
    assert status == EXIT_SOME_CASES_FAILED
    error = results(tmp_path / "out")["tiny"]["error"]
    assert "tiny.nii.gz: is too small to be a brain scan (field of view 8 × 8 × 8 mm, minimum " \
           f"{MIN_FIELD_OF_VIEW_MM:g} mm" in error


def huge_header(path: Path) -> Path:
    """A NIfTI file whose header claims 5000³ uint8 voxels (116 GiB) but holds 16 bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((5000, 5000, 5000))
    header.set_zooms((0.05, 0.05, 0.05))
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 16)
    return path


def test_header_claiming_5000_cubed_voxels_is_refused_before_reading_voxels(tmp_path):
    """Under a 3 GiB address-space limit: allocating the declared 116 GiB would fail differently."""
    path = huge_header(tmp_path / "huge.nii")
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from AnomalySegLib.errors import InputError
        from AnomalySegLib.io.volume_io import read_volume
        try:
            read_volume({str(path)!r})
        except InputError as error:
            print(error)
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8",
                               timeout=300, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "declares 5000×5000×5000 voxels" in completed.stdout
    assert f"at most {MAX_VOXELS:,}" in completed.stdout


# --- re-runs into the same folder (#11.4, #11.5, #11.8, #11.9) -----------------------------------------


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, real_data, tiny_bundle):
    """MRBrainTumor1 segmented once with the tiny bundle (default threshold), JSON progress."""
    root = tmp_path_factory.mktemp("rerun")
    inputs = root / "inputs"
    inputs.mkdir()
    shutil.copy(real_data("mrbraintumor1"), inputs / f"{CASE}.nii.gz")
    out = root / "out"
    completed = cli("segment", inputs / f"{CASE}.nii.gz", "-o", out, "--model", tiny_bundle, "--device", "auto",
                    "--progress-format", "json")
    assert completed.returncode == EXIT_OK, completed.stderr[-3000:]
    return {"inputs": inputs, "out": out, "completed": completed, "root": root}


def copy_of(first_run, name: str) -> Path:
    """A copy of the first run's output folder (the tests of this module change theirs)."""
    copy = first_run["root"] / name
    shutil.copytree(first_run["out"], copy)
    return copy


def test_device_and_precision_are_reported(first_run):
    """The first run asked for ``--device auto``: the note says what that became (a warning on the CPU)."""
    completed = first_run["completed"]
    device = choose_device("auto")
    precision = precision_name(autocast_dtype(device, "auto"))
    start = events(completed.stdout)[0]
    assert start.event == "start" and start.fields["device"] == str(device) and start.fields["precision"] == precision
    note = "no GPU found (--device auto): running on cpu" if device.type == "cpu" else f"running on {device}"
    assert note in completed.stderr and f"precision {precision}" in completed.stderr
    row = results(first_run["out"])[CASE]
    assert row["device"] == str(device) and row["precision"] == precision


def test_every_declared_stage_is_reported_and_timed(first_run):
    stages = {event.stage for event in events(first_run["completed"].stdout) if event.event == "progress"}
    assert stages == set(SEGMENT_STAGES)
    row = results(first_run["out"])[CASE]
    assert all(float(row[f"seconds_{stage}"]) > 0 for stage in SEGMENT_STAGES), row


def test_same_settings_skip_and_the_event_says_with_what(first_run, tiny_bundle):
    out = copy_of(first_run, "same")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    completed = cli("segment", first_run["inputs"] / f"{CASE}.nii.gz", "-o", out, "--model", tiny_bundle,
                    "--device", "cpu", "--progress-format", "json")
    assert completed.returncode == EXIT_OK, completed.stderr[-3000:]
    done = next(event for event in events(completed.stdout) if event.event == "case_done")
    assert done.fields["skipped"] is True
    assert done.fields["settings"]["threshold_source"] == "val" and done.fields["threshold_source"] == "val"
    assert Path(done.fields["outputs"]["segmentation"]).is_file()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(CASE)} == \
           {name: stamp for name, stamp in stamps.items() if name.startswith(CASE)}


def test_other_threshold_rethresholds_the_saved_map_without_a_network_pass(first_run, tiny_bundle):
    out = copy_of(first_run, "rethreshold")
    before = json.loads((out / f"{CASE}_result.json").read_text(encoding="utf-8"))
    map_stamp = (out / f"{CASE}_anomaly_map.nii.gz").stat().st_mtime_ns
    new_threshold = before["threshold"] * 1.5
    completed = cli("segment", first_run["inputs"] / f"{CASE}.nii.gz", "-o", out, "--model", tiny_bundle,
                    "--device", "cpu", "--threshold", f"{new_threshold}", "--progress-format", "json")
    assert completed.returncode == EXIT_OK, completed.stderr[-3000:]
    assert "reconstruct" not in {event.stage for event in events(completed.stdout)}  # no network pass
    after = json.loads((out / f"{CASE}_result.json").read_text(encoding="utf-8"))
    assert after["threshold"] == pytest.approx(new_threshold) and after["threshold_source"] == "user"
    assert after["settings"]["threshold"] == pytest.approx(new_threshold)
    assert (out / f"{CASE}_anomaly_map.nii.gz").stat().st_mtime_ns == map_stamp
    score = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{CASE}_anomaly_map.nii.gz")))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{CASE}_anomaly_mask.nii.gz")))
    assert np.array_equal(mask > 0, score > new_threshold)
    assert after["volume_ml"] <= before["volume_ml"]
    assert results(out)[CASE]["threshold"] == f"{new_threshold:.6g}"


def test_other_options_stop_with_one_line_and_leave_the_case(first_run, tiny_bundle):
    out = copy_of(first_run, "other_seed")
    before = (out / f"{CASE}_result.json").read_text(encoding="utf-8")
    completed = cli("segment", first_run["inputs"] / f"{CASE}.nii.gz", "-o", out, "--model", tiny_bundle,
                    "--device", "cpu", "--seed", "7")
    assert completed.returncode == EXIT_SOME_CASES_FAILED
    error = results(out)[CASE]["error"]
    assert "other settings (seed differ)" in error and "--overwrite" in error
    assert (out / f"{CASE}_result.json").read_text(encoding="utf-8") == before


def test_a_run_killed_while_writing_is_finished_by_a_rerun(first_run, tiny_bundle):
    """The state a kill during the write stage leaves: outputs under their final names, a temporary
    file, the writing marker, no result file. A plain re-run replaces them; nothing else is redone."""
    out = copy_of(first_run, "killed")
    result = json.loads((out / f"{CASE}_result.json").read_text(encoding="utf-8"))
    (out / f".{CASE}_writing.json").write_text(json.dumps({"settings": result["settings"]}), encoding="utf-8")
    (out / f"{CASE}_result.json").unlink()
    (out / f"{CASE}_qc.png").unlink()  # killed before the QC picture was renamed into place
    stray = out / f".{CASE}_qc.k3j4h5q1.png"
    stray.write_bytes(b"half a png")
    completed = cli("segment", first_run["inputs"] / f"{CASE}.nii.gz", "-o", out, "--model", tiny_bundle,
                    "--device", "cpu")
    assert completed.returncode == EXIT_OK, completed.stderr[-3000:]
    assert (out / f"{CASE}_result.json").is_file() and (out / f"{CASE}_qc.png").is_file()
    assert not stray.exists() and not (out / f".{CASE}_writing.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert results(out)[CASE]["status"] == "ok"


def test_results_table_keeps_the_cases_of_earlier_runs(first_run, tiny_bundle, tmp_path):
    """A second run into the folder (here a case that fails at once) adds its row to the earlier ones."""
    out = copy_of(first_run, "merged")
    second = write_tiny_volume(tmp_path / "second.nii.gz")
    status = main(["segment", str(second), "-o", str(out), "--model", str(tiny_bundle), "--device", "cpu"])
    assert status == EXIT_SOME_CASES_FAILED
    rows = results(out)
    assert set(rows) == {CASE, "second"} and rows[CASE]["status"] == "ok" and rows["second"]["status"] == "failed"
    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [row["case"] for row in document["cases"]] == sorted([CASE, "second"]) and len(document["runs"]) == 2


# --- masks: one matching rule (#14.5) ------------------------------------------------------------------


def test_mask_folder_without_a_mask_for_a_case_is_refused_like_preprocess(tmp_path, real_data, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(real_data("itk_kmeans_t1"), inputs / "a.nii.gz")
    shutil.copy(real_data("itk_kmeans_t1"), inputs / "b.nii.gz")
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(real_data("itk_kmeans_brain_labels"), masks / "a_mask.nii.gz")
    for command in ("segment", "preprocess"):
        line = one_error_line_in_process([command, inputs, "-o", tmp_path / f"out_{command}", "--mask", masks], capsys)
        assert "masks: holds no mask file for case(s) b" in line
