"""``anomalyseg segment`` end to end on the real MRBrainTumor1, with a tiny trained bundle.

One batch run (the tumour case plus a truncated file) is shared by the tests of this module: it
checks the outputs, the batch behaviour and the JSON progress protocol on the same real run.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from AnomalySegLib.cli import main
from AnomalySegLib.segment_batch import Prefetcher
from AnomalySegLib.errors import InputError
from AnomalySegLib.io.case_inputs import CaseInput
from AnomalySegLib.io.segmentation_io import ANOMALY_SEGMENT
from AnomalySegLib.pipeline import AnomalySegmenter
from AnomalySegLib.progress import parse_progress_line
from AnomalySegLib.reporting.results_table import COLUMNS
from slicer_scene import build_scene

CASE = "tumour"
THREADS = 2  # CPU threads of every segment run here (CI machines have 2 cores)
ITK_THREADS = 1  # ITK threads of the runs whose maps are compared (multi-threaded registration is not repeatable)
OUTPUT_SUFFIXES = ("_recon.nii.gz", "_anomaly_map.nii.gz", "_anomaly_mask.nii.gz", "_anomaly.seg.nrrd", "_qc.png")


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, real_data, tiny_bundle):
    """Segment a folder holding MRBrainTumor1 and a truncated file, in a subprocess as the Slicer module
    runs it (``python -m AnomalySegLib segment ... --progress-format json``)."""
    root = tmp_path_factory.mktemp("segment")
    inputs = root / "inputs"
    inputs.mkdir()
    shutil.copy(real_data("mrbraintumor1"), inputs / f"{CASE}.nii.gz")
    good = gzip.decompress(real_data("mrbraintumor1").read_bytes())
    (inputs / "broken.nii.gz").write_bytes(gzip.compress(good[: len(good) // 3]))
    out = root / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "AnomalySegLib", "segment", str(inputs), "-o", str(out), "--model", str(tiny_bundle),
         "--device", "cpu", "--progress-format", "json", "--save-intermediate", "--threads", str(THREADS)],
        capture_output=True, text=True, encoding="utf-8", timeout=600,
        env={**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(ITK_THREADS)},
    )
    return {"status": completed.returncode, "inputs": inputs, "out": out, "stdout": completed.stdout,
            "stderr": completed.stderr}


def test_failing_case_is_reported_and_the_good_one_finishes(batch_run):
    assert batch_run["status"] == 1, batch_run["stderr"]  # not every case succeeded
    rows = {row["case"]: row for row in csv.DictReader((batch_run["out"] / "results.csv").open(encoding="utf-8"))}
    assert list(csv.reader((batch_run["out"] / "results.csv").open(encoding="utf-8")))[0] == list(COLUMNS)
    assert rows[CASE]["status"] == "ok"
    assert rows["broken"]["status"] == "failed"
    assert "broken.nii.gz" in rows["broken"]["error"]
    assert not any(p.name.startswith("broken_") for p in batch_run["out"].iterdir())  # nothing half-written
    assert float(rows[CASE]["seconds_preprocess"]) > 0 and float(rows[CASE]["seconds_reconstruct"]) > 0


def test_every_output_has_the_input_geometry(batch_run, real_data):
    reference = sitk.ReadImage(str(real_data("mrbraintumor1")))
    for suffix in ("_recon.nii.gz", "_anomaly_map.nii.gz", "_anomaly_mask.nii.gz"):
        image = sitk.ReadImage(str(batch_run["out"] / f"{CASE}{suffix}"))
        assert image.GetSize() == reference.GetSize(), suffix
        assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6), suffix
        assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4), suffix
        assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6), suffix
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(batch_run["out"] / f"{CASE}_anomaly_mask.nii.gz")))
    score = sitk.GetArrayFromImage(sitk.ReadImage(str(batch_run["out"] / f"{CASE}_anomaly_map.nii.gz")))
    result = json.loads((batch_run["out"] / f"{CASE}_result.json").read_text(encoding="utf-8"))
    assert set(np.unique(mask)) <= {0, 1}
    assert np.array_equal(mask > 0, score > result["threshold"])  # the mask is the map, thresholded
    voxel_ml = np.prod(reference.GetSpacing()) / 1000
    assert result["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, rel=1e-6)
    assert (batch_run["out"] / f"{CASE}_model_space" / "anomaly_score.nii.gz").is_file()


def test_outputs_and_intermediates_get_ordinary_permissions(batch_run):
    """Files and the model-space folder are staged privately (mkstemp/mkdtemp) but end with the umask's mode."""
    umask = os.umask(0)
    os.umask(umask)
    folder = batch_run["out"] / f"{CASE}_model_space"
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    files = [*folder.iterdir(), *(batch_run["out"] / f"{CASE}{suffix}" for suffix in OUTPUT_SUFFIXES)]
    assert all(path.stat().st_mode & 0o777 == 0o666 & ~umask for path in files)


def test_segmentation_opens_in_slicer_with_name_colour_and_terminology(batch_run):
    scene = build_scene().scene  # real MRML classes from slicer-core
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(batch_run["out"] / f"{CASE}_anomaly.seg.nrrd"))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == ANOMALY_SEGMENT.name
    assert np.allclose(segment.GetColor(), ANOMALY_SEGMENT.color, atol=1e-3)
    assert segment.GetTerminology() == ANOMALY_SEGMENT.terminology.to_string()
    assert "SCT^4147007^Mass" in segment.GetTerminology() and "SCT^12738006^Brain" in segment.GetTerminology()


def test_qc_picture_is_a_real_png(batch_run):
    with Image.open(batch_run["out"] / f"{CASE}_qc.png") as png:
        assert png.format == "PNG" and png.size[0] >= 800 and png.size[1] >= 600
        assert np.asarray(png.convert("L")).std() > 10  # not blank


def test_json_progress_lines_follow_the_protocol(batch_run):
    events = [parse_progress_line(line) for line in batch_run["stdout"].splitlines()]
    events = [e for e in events if e is not None]
    kinds = [e.event for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    fractions = [e.fraction for e in events if e.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    done = next(e for e in events if e.event == "case_done")
    assert done.case == CASE and Path(done.fields["outputs"]["segmentation"]).is_file()
    assert {"threshold", "volume_ml", "thresholds"} <= set(done.fields)
    error = next(e for e in events if e.event == "error")
    assert error.case == "broken" and "broken.nii.gz" in error.message


def test_rerun_skips_finished_cases_and_never_overwrites(batch_run, tiny_bundle):
    out = batch_run["out"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(CASE)}
    status = main(["segment", str(batch_run["inputs"]), "-o", str(out), "--model", str(tiny_bundle),
                   "--device", "cpu", "--progress-format", "json"])
    assert status == 1  # the broken case still fails
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(CASE)}
    rows = {row["case"]: row for row in csv.DictReader((out / "results.csv").open(encoding="utf-8"))}
    assert rows[CASE]["status"].startswith("skipped") and rows[CASE]["volume_ml"] != ""


def test_partial_outputs_are_not_overwritten_silently(tmp_path, batch_run, tiny_bundle):
    stale = tmp_path / f"{CASE}_qc.png"
    stale.write_bytes(b"someone else's file")
    status = main(["segment", str(batch_run["inputs"] / f"{CASE}.nii.gz"), "-o", str(tmp_path),
                   "--model", str(tiny_bundle), "--device", "cpu"])
    assert status == 1
    assert stale.read_bytes() == b"someone else's file"
    row = next(csv.DictReader((tmp_path / "results.csv").open(encoding="utf-8")))
    assert row["status"] == "failed" and "exists already" in row["error"] and "--overwrite" in row["error"]


@pytest.mark.parametrize("problem", ["missing", "tampered", "future_format", "unknown_preset"])
def test_bad_model_bundle_is_a_one_line_error(problem, tmp_path, tiny_bundle, real_data, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    threshold = "val"
    if problem == "missing":
        bundle = tmp_path / "no_such_bundle"
    elif problem == "tampered":
        weights = bundle / "seg.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif problem == "future_format":
        description = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
        description["format_version"] = 99
        (bundle / "model.json").write_text(json.dumps(description))
    else:
        threshold = "fpr42"
    status = main(["segment", str(real_data("mrbraintumor1")), "-o", str(tmp_path / "out"), "--model", str(bundle),
                   "--device", "cpu", "--threshold", threshold])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and "error:" in err[0]
    assert ("fpr42" in err[0]) if problem == "unknown_preset" else (bundle.name in err[0])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_python_api_rethresholds_consistently(batch_run, tiny_bundle, real_data):
    # The same seed gives the same map at the same number of CPU threads (float sums are ordered by
    # thread); an earlier test in this process may have set another count. ITK's registration is
    # repeatable only on one thread (Testing/test_determinism.py), so both runs register on one.
    torch.set_num_threads(THREADS)
    segmenter = AnomalySegmenter(tiny_bundle, device="cpu")
    image = sitk.ReadImage(str(real_data("mrbraintumor1")))
    itk_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(ITK_THREADS)
    try:
        strict = segmenter.segment(image, threshold=segmenter.thresholds["val"] * 1.5)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_threads)
    assert strict.threshold_source == "user"
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(batch_run["out"] / f"{CASE}_anomaly_map.nii.gz")))
    assert np.allclose(sitk.GetArrayViewFromImage(strict.anomaly_map), written, atol=1e-5)  # same seed, same map
    assert strict.findings.volume_ml <= json.loads((batch_run["out"] / f"{CASE}_result.json").read_text(encoding="utf-8"))["volume_ml"]


def test_prefetcher_prepares_the_next_case_and_reports_its_errors_when_taken(tiny_bundle, real_data, tmp_path):
    """The GPU batch path (preprocessing in a thread while the networks run), exercised on the CPU."""
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume")
    cases = [CaseInput("kmeans", real_data("itk_kmeans_t1")), CaseInput("broken", broken)]
    segmenter = AnomalySegmenter(tiny_bundle, device="cpu")
    prefetcher = Prefetcher(segmenter, cases, masks={})
    try:
        prepared = prefetcher.take(cases[0])
        assert prepared.case.image.GetSize() == (96, 96, 50) and prepared.timings.preprocess > 0
        with pytest.raises(InputError, match="broken.nii.gz"):
            prefetcher.take(cases[1])
    finally:
        prefetcher.close()
