"""The bundled default model (``Resources/Models/default``): complete, small, and it finds the tumour.

The accuracy test is the README's first command — ``anomalyseg segment`` on MRBrainTumor1 with the
default model, CPU — scored against the tumour label (value 9) on the input's own grid. Its floor comes
from ``benchmarks/default_model.py`` (BENCHMARKS.md, section "Default model on the tumour cases").
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.cli import main
from AnomalySegLib.metrics import dice
from AnomalySegLib.pipeline import THRESHOLD_PRESETS, default_model_path

MODEL_NAME = "anomalyseg-default-t1"
MAX_BUNDLE_BYTES = 25 * 1024 * 1024
TUMOUR_LABEL = 9
# "Found" means a native-grid Dice above 0.3 at the calibrated "val" threshold. BENCHMARKS.md (section
# default_model) measures 0.404 for the bundled model on this case (⌈Dice⌉ 0.79 on the native grid; the
# "val" mask is about 4× too large: it takes in the darker tissue next to the tumour). The floor leaves
# room for run-to-run differences (threads, CPU kind) yet fails a model that misses: a mask of the whole
# brain scores about 0.02 (a 16 ml tumour in a roughly 1.5 l brain), a mask beside the tumour about 0. The
# previous default model (DRAEM anomalies only) scored 0.004 here.
DICE_FLOOR = 0.3


def test_default_bundle_is_complete_and_small():
    folder = default_model_path()
    bundle = load_bundle(folder)  # verifies the weights' checksums
    assert bundle.description["name"] == MODEL_NAME
    assert {"recon", "seg"} <= set(bundle.components)
    assert set(bundle.description["scoring"]["thresholds"]) == set(THRESHOLD_PRESETS)
    assert sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) <= MAX_BUNDLE_BYTES
    training = bundle.description["provenance"]["default_model"]
    assert not {"mrbraintumor1", "mrbraintumor2"} & {*training["training_volumes"], training["held_out_volume"]}
    assert (folder / "MODEL_CARD.md").is_file()


@pytest.mark.slow
def test_first_command_finds_the_tumour(tmp_path, real_data):
    out = tmp_path / "out"
    status = main(["segment", str(real_data("mrbraintumor1")), "-o", str(out), "--device", "cpu", "--threads", "2"])
    assert status == 0
    case = "mrbraintumor1"
    for suffix in ("_recon.nii.gz", "_anomaly_map.nii.gz", "_anomaly.seg.nrrd", "_qc.png", "_result.json"):
        assert (out / f"{case}{suffix}").is_file(), suffix
    result = json.loads((out / f"{case}_result.json").read_text(encoding="utf-8"))
    assert result["threshold_source"] == "val"

    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(real_data("mrbraintumor1_labels")))) == TUMOUR_LABEL
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}_anomaly_mask.nii.gz"))) > 0
    score = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}_anomaly_map.nii.gz")))
    assert dice(mask, truth) > DICE_FLOOR
    in_brain = score > 0
    assert np.median(score[truth]) > np.percentile(score[in_brain & ~truth], 95)  # the tumour stands out
