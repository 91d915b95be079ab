"""The bundled default model (``Resources/Models/default``): complete, small, and it finds the tumour.

The accuracy test is the README's first command — ``anomalyseg segment`` on MRBrainTumor1 with the
default model, CPU — scored against the tumour label (value 9) on the input's own grid. Its floor comes
from ``benchmarks/default_model.py`` (BENCHMARKS.md, section "Default model on the tumour cases").
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.cli import main
from AnomalySegLib.metrics import dice
from AnomalySegLib.pipeline import THRESHOLD_PRESETS, default_model_path
from AnomalySegLib.preprocessing.spec import WHOLE_BRAIN_GRID, PreprocessingSpec

MODEL_NAME = "anomalyseg-default-t1"
MAX_BUNDLE_BYTES = 25 * 1024 * 1024
TUMOUR_LABEL = 9
# "Found" means a native-grid Dice above 0.5 at the calibrated operating point (issue #13's aim). BENCHMARKS.md
# (section default_model) measures 0.730 for the bundled model on this case (⌈Dice⌉ 0.78 on the native grid;
# the mask, 26.8 ml in 4 findings, also takes in the darker tissue next to the 16.3 ml enhancing tumour). The
# floor leaves room for run-to-run differences (threads, CPU kind) yet fails a model that misses or floods: a
# mask of the whole brain scores about 0.02, a mask beside the tumour about 0, and the previous default model
# at its first calibrated threshold 0.40.
DICE_FLOOR = 0.5


def test_default_bundle_is_complete_and_small():
    folder = default_model_path()
    bundle = load_bundle(folder)  # verifies the weights' checksums
    assert bundle.description["name"] == MODEL_NAME
    assert {"recon", "seg"} <= set(bundle.components)
    assert set(bundle.description["scoring"]["thresholds"]) == set(THRESHOLD_PRESETS)
    assert sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) <= MAX_BUNDLE_BYTES
    recipe = bundle.description["provenance"]["default_model"]
    training, calibration, test = (set(recipe[f"{role}_sources"]) for role in ("training", "calibration", "test"))
    assert training and calibration and test  # split by subject: no subject in two roles
    assert not training & calibration and not training & test and not calibration & test
    assert not {"mrbraintumor1", "mrbraintumor2"} & (training | calibration | test)
    assert PreprocessingSpec.from_dict(bundle.description["preprocessing"]).grid == WHOLE_BRAIN_GRID
    assert (folder / "MODEL_CARD.md").is_file()
    assert not [text for text in strings(bundle.description) if PurePosixPath(text).is_absolute()
                or PureWindowsPath(text).drive]  # no path of the machine that trained it


def strings(value) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [text for item in items for text in strings(item)]


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
