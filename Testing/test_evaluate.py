"""``anomalyseg evaluate`` end to end: the tiny bundle on the real tumour cases MRBrainTumor1/2.

The end-to-end tests are ``slow``: preprocessing the two tumour cases takes ~30 s on 2 cores.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.cli import main
from AnomalySegLib.evaluation import PooledPRCurve, resolve_threshold
from AnomalySegLib.evaluation.native import native_metrics
from AnomalySegLib.metrics import auprc, best_dice
from AnomalySegLib.preprocessing.case_folder import IMAGE_FILE, MASK_FILE, load_case, write_case
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.scoring.volume import AnomalyScorer

TUMOUR_CASES = {"mrbraintumor1": 9, "mrbraintumor2": 1}


@pytest.fixture(scope="module")
def case_root(tmp_path_factory, real_data, healthy_cases):
    """Two real tumour cases preprocessed with their tumour labels, and one real healthy case."""
    root = tmp_path_factory.mktemp("evaluation_cases")
    for name, value in TUMOUR_CASES.items():
        case = preprocess_file(real_data(name), labels_path=real_data(f"{name}_labels"), label_values=[value])
        write_case(case, root / name)
    healthy = healthy_cases[1]
    (root / healthy.case_id).mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(healthy.image), str(root / healthy.case_id / IMAGE_FILE))
    sitk.WriteImage(sitk.GetImageFromArray(healthy.mask.astype(np.uint8)), str(root / healthy.case_id / MASK_FILE))
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory, case_root, tiny_bundle):
    out = tmp_path_factory.mktemp("evaluation") / "report"
    status = main(["evaluate", "--model", str(tiny_bundle), "--data", str(case_root), "-o", str(out),
                   "--device", "cpu", "--threads", "2", "--native"])
    assert status == 0
    return out


@pytest.mark.slow
def test_report_files_and_values(report, case_root, tiny_bundle):
    document = json.loads((report / "report.json").read_text(encoding="utf-8"))
    bundle = load_bundle(tiny_bundle)
    assert document["threshold"] == pytest.approx(bundle.description["scoring"]["thresholds"]["val"])
    assert document["variants"] == ["combined", "stage1", "unet"]
    cases = {entry["case"]: entry for entry in document["cases"]}
    assert set(cases) == {"mrbraintumor1", "mrbraintumor2", "sri24_t1_brain"}
    assert cases["sri24_t1_brain"]["healthy"] and 0 <= cases["sri24_t1_brain"]["metrics"]["combined"]["fpr"] <= 1

    # An independent scoring pass (same seed) reproduces the reported values of a tumour case.
    case = load_case(case_root / "mrbraintumor1")
    assert cases["mrbraintumor1"]["anomaly_voxels"] == int(case.labels.sum()) > 0
    scores = AnomalyScorer.from_bundle(bundle, device="cpu").score(case.image, case.mask, seed=0)
    reported = cases["mrbraintumor1"]["metrics"]
    assert reported["combined"]["best_dice"] == pytest.approx(best_dice(scores.anomaly_score, case.labels)[0])
    assert reported["stage1"]["auprc"] == pytest.approx(
        auprc(scores.reconstruction_term * case.mask, case.labels), rel=1e-5)
    assert reported["combined"]["true_volume_ml"] == pytest.approx(case.labels.sum() * 0.008)

    # Summary = mean ± std of the per-case values; the ablations have no metrics at the threshold.
    for key in ("best_dice", "auprc", "dice"):
        values = [cases[name]["metrics"]["combined"][key] for name in TUMOUR_CASES]
        stats = document["summary"]["combined"][key]
        assert stats["n"] == 2
        assert stats["mean"] == pytest.approx(np.mean(values)) and stats["std"] == pytest.approx(np.std(values))
    assert document["summary"]["combined"]["healthy_fpr"]["n"] == 1
    assert document["grid"] == "model and native"
    native = cases["mrbraintumor2"]["metrics"]["combined"]
    assert 0 <= native["native_dice"] <= native["native_best_dice"] <= 1 and 0 < native["native_auprc"] <= 1
    assert cases["mrbraintumor2"]["metrics"]["unet"]["dice"] is None

    with open(report / "cases.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9  # 3 cases × 3 variants
    row = next(r for r in rows if r["case"] == "mrbraintumor2" and r["variant"] == "combined")
    assert float(row["best_dice"]) == pytest.approx(cases["mrbraintumor2"]["metrics"]["combined"]["best_dice"])
    markdown = (report / "report.md").read_text(encoding="utf-8")
    assert "| SADM (combined AS) |" in markdown and "mrbraintumor2" in markdown and "±" in markdown
    assert (report / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_existing_report_is_not_overwritten(report, case_root, tiny_bundle, capsys):
    before = (report / "report.json").read_bytes()
    status = main(["evaluate", "--model", str(tiny_bundle), "--data", str(case_root), "-o", str(report)])
    assert status == 2
    assert "exists already" in capsys.readouterr().err
    assert (report / "report.json").read_bytes() == before


def test_unknown_threshold_preset_is_a_one_line_error(tmp_path, tiny_bundle, capsys):
    status = main(["evaluate", "--model", str(tiny_bundle), "--data", str(tmp_path), "-o", str(tmp_path / "r"),
                   "--threshold", "fpr3"])
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert "fpr3" in error and "val" in error and len(error.splitlines()) == 1


@pytest.mark.slow
def test_native_metrics_of_the_model_grid_truth_recover_the_native_labels(case_root):
    """The case's own model-grid labels, restored to the scan, overlap its native tumour label closely."""
    case = load_case(case_root / "mrbraintumor1")
    result = native_metrics(case_root / "mrbraintumor1", case.labels.astype(np.float32), threshold=0.5)
    assert result["native_dice"] > 0.8 and result["native_best_dice"] >= result["native_dice"]
    assert result["native_auprc"] > 0.7


def test_resolve_threshold(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    presets = bundle.description["scoring"]["thresholds"]
    assert resolve_threshold(bundle, None) == (pytest.approx(presets["val"]), "val")
    assert resolve_threshold(bundle, "fpr5") == (pytest.approx(presets["fpr5"]), "fpr5")
    assert resolve_threshold(bundle, "0.25") == (0.25, "given")


def test_pooled_pr_curve_matches_exact_average_precision():
    rng = np.random.default_rng(0)
    pooled = PooledPRCurve(bins=1000)
    scores, truths = [], []
    for _ in range(3):  # three "volumes", pooled
        truth = rng.random(4000) < 0.1
        score = np.round(np.clip(rng.random(4000) * 0.7 + 0.3 * truth, 0, 1), 3)  # on the bin grid
        pooled.add(score, truth)
        scores.append(score)
        truths.append(truth)
    assert pooled.average_precision() == pytest.approx(auprc(np.concatenate(scores), np.concatenate(truths)),
                                                       abs=2e-3)
    assert math.isnan(PooledPRCurve().average_precision())
