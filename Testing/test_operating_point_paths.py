"""One operating-point rule, one mask: ``segment``, ``evaluate --native`` and the Slicer module's
re-thresholding (slicer-core, real MRML) give the same mask for the same model, threshold and clean-up.

A real case (MRBrainTumor2 with its tumour label), the tiny test model with a clean-up switched on in its
bundle (rim erosion, median, minimum finding size), a threshold that flags a few per cent of the brain.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.calibration import write_scoring_section
from AnomalySegLib.evaluation.evaluate import evaluate_bundle
from AnomalySegLib.metrics import dice
from AnomalySegLib.outputs import CaseOutputs, write_case_outputs
from AnomalySegLib.pipeline import AnomalySegmenter
from AnomalySegLib.preprocessing.case_folder import write_case
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.scoring.operating_point import CleanUp, apply_operating_point, voxel_size_zyx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "AnomalySeg"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from AnomalySegModuleLib import SceneGlue  # noqa: E402
from AnomalySegModuleLib.Results import ResultFiles  # noqa: E402
from slicer_scene import build_scene  # noqa: E402

CASE, TUMOUR_LABEL = "mrbraintumor2", 1
CLEAN_UP = CleanUp(rim_erosion_mm=3.0, median_mm=3.0, min_finding_ml=0.2)


@pytest.fixture(scope="module")
def cleaned_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny test model with ``CLEAN_UP`` in its scoring section (only model.json changes)."""
    folder = tmp_path_factory.mktemp("cleaned") / "bundle"
    shutil.copytree(tiny_bundle, folder)
    section = {**load_bundle(folder).description["scoring"], **CLEAN_UP.to_dict()}
    write_scoring_section(folder, section)
    return folder


@pytest.fixture(scope="module")
def segmented(cleaned_bundle, real_data, tmp_path_factory):
    """``segment`` (the Python API the CLI calls) at a threshold flagging ~4 % of the brain, outputs written."""
    segmenter = AnomalySegmenter(cleaned_bundle, device="cpu")
    assert segmenter.clean_up == CLEAN_UP
    prepared = segmenter.prepare_file(real_data(CASE))
    image, mask, _ = prepared.case.arrays()
    scores = segmenter.scorer.score(image, mask, seed=segmenter.seed).anomaly_score
    threshold = float(np.quantile(scores[mask], 0.96))
    result = segmenter.finish(prepared, (threshold, "user"))
    folder = tmp_path_factory.mktemp("segment-output")
    write_case_outputs(result, CaseOutputs(folder, CASE))
    return result, threshold, folder


def test_segment_applies_the_bundles_clean_up(segmented):
    result, threshold, _ = segmented
    scores = sitk.GetArrayFromImage(result.anomaly_map)
    mask = sitk.GetArrayFromImage(result.anomaly_mask) > 0
    spacing = voxel_size_zyx(result.image.GetSpacing())
    np.testing.assert_array_equal(mask, apply_operating_point(scores, spacing, threshold, CLEAN_UP))
    raw = scores > threshold
    assert 0 < mask.sum() < raw.sum()  # the clean-up did something, and something is left
    assert result.info.operating_point == {"threshold": threshold, "source": "user", **CLEAN_UP.to_dict()}
    assert 0.5 < result.info.scored_brain_fraction < 1.0  # the 100 mm box misses part of the brain


def test_evaluate_native_uses_the_same_mask(segmented, cleaned_bundle, real_data, tmp_path):
    result, threshold, _ = segmented
    case = preprocess_file(real_data(CASE), labels_path=real_data(f"{CASE}_labels"), label_values=[TUMOUR_LABEL])
    write_case(case, tmp_path / "cases" / CASE)
    evaluation = evaluate_bundle(cleaned_bundle, tmp_path / "cases", repr(threshold), device="cpu", native=True)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(real_data(f"{CASE}_labels")))) == TUMOUR_LABEL
    segment_dice = dice(sitk.GetArrayFromImage(result.anomaly_mask) > 0, truth)
    native = evaluation.cases[0].metrics["combined"]
    assert native["native_dice"] == pytest.approx(segment_dice, abs=1e-9)
    raw = evaluate_bundle(cleaned_bundle, tmp_path / "cases", repr(threshold), device="cpu", native=True, raw=True)
    raw_dice = dice(sitk.GetArrayFromImage(result.anomaly_map) > threshold, truth)
    assert raw.cases[0].metrics["combined"]["native_dice"] == pytest.approx(raw_dice, abs=1e-9)
    assert evaluation.clean_up == CLEAN_UP and raw.clean_up.is_raw


def test_slicer_rethresholding_uses_the_same_mask(segmented, real_data):
    """slicer-core's real MRML classes (no Qt): the module's threshold path with the model's clean-up."""
    result, threshold, folder = segmented
    app = build_scene()
    input_volume = app.load_volume(real_data(CASE), "MRBrainTumor2")
    imported = SceneGlue.importResults(ResultFiles.inFolder(folder, CASE), input_volume, app.volumes_logic,
                                       app.segmentations_logic, threshold=threshold)
    engine_mask = sitk.GetArrayFromImage(result.anomaly_mask) > 0
    SceneGlue.thresholdAnomalyMap(imported.anomalyMapNode, imported.segmentationNode, imported.segmentId,
                                  threshold * 1.5)  # move the slider away and back
    statistics = SceneGlue.thresholdAnomalyMap(imported.anomalyMapNode, imported.segmentationNode,
                                               imported.segmentId, threshold, CLEAN_UP)
    np.testing.assert_array_equal(
        SceneGlue.segmentMaskOnGridOf(input_volume, imported.segmentationNode, imported.segmentId), engine_mask)
    assert statistics.findings == result.findings.components


def test_findings_csv_lists_every_finding_of_the_mask(segmented):
    result, _, folder = segmented
    with open(folder / f"{CASE}_findings.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result.findings.components >= 1
    assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
    assert sum(float(row["volume_ml"]) for row in rows) == pytest.approx(result.findings.volume_ml, rel=1e-4)
    assert (folder / f"{CASE}_qc.png").stat().st_size > 10_000


def test_calibrate_chooses_the_operating_point_and_keeps_other_files(tiny_bundle, healthy_cases, tmp_path, capsys):
    """``anomalyseg calibrate --healthy`` in place: the rule's choice lands in model.json (threshold, clean-up,
    evidence); the weights and a model card next to them stay."""
    from AnomalySegLib.cli import main
    from AnomalySegLib.preprocessing.case_folder import IMAGE_FILE, MASK_FILE

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "MODEL_CARD.md").write_text("card\n", encoding="utf-8")
    healthy = tmp_path / "healthy"
    for case in healthy_cases[2:4]:
        (healthy / case.case_id).mkdir(parents=True)
        sitk.WriteImage(sitk.GetImageFromArray(case.image), str(healthy / case.case_id / IMAGE_FILE))
        sitk.WriteImage(sitk.GetImageFromArray(case.mask.astype(np.uint8)), str(healthy / case.case_id / MASK_FILE))
    assert main(["calibrate", "--model", str(bundle), "--healthy", str(healthy), "--lesion-copies", "1",
                 "--max-healthy-ml", "5", "--rim-erosion-mm", "0", "4", "--median-mm", "0",
                 "--min-finding-ml", "0", "0.5", "--device", "cpu", "--threads", "2"]) == 0
    assert "operating point: threshold" in capsys.readouterr().out
    scoring = load_bundle(bundle).description["scoring"]
    evidence = scoring["calibration"]["operating_point"]
    assert scoring["thresholds"]["val"] == evidence["threshold"]
    assert scoring["rim_erosion_mm"] in (0.0, 4.0) and scoring["min_finding_ml"] in (0.0, 0.5)
    assert evidence["healthy_cases"] == [case.case_id for case in healthy_cases[2:4]]
    assert len(evidence["lesion_dice"]) == 2 and evidence["rule"]["max_healthy_ml"] == 5.0
    assert evidence["combinations_tried"] >= 4
    if evidence["healthy_limit_met"]:
        assert all(v["flagged_ml"] <= 5.0 and v["findings"] <= 5 for v in evidence["healthy"].values())
    assert set(scoring["thresholds"]) == {"val", "fpr1", "fpr5", "fpr10"}
    assert (bundle / "MODEL_CARD.md").read_text(encoding="utf-8") == "card\n"
