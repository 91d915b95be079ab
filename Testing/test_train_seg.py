"""Stage II on real brains: SADM beats Stage I alone on held-out synthetic anomalies; labels; resume; CLI.

A tiny Stage I (``recon_tiny``) and a tiny SegUnet (``seg_tiny``) are trained once per module on the
real healthy brains of the ``healthy_cases`` fixture; SRI24 is held out of both stages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from AnomalySegLib import cli
from AnomalySegLib.anomalies import (AnomalyMixture, DraemAnomalyGenerator, LesionAnomalyGenerator,
                                     TumourAnomalyGenerator, TumourAppearance)
from AnomalySegLib.bundle import load_bundle, save_bundle
from AnomalySegLib.errors import InputError
from AnomalySegLib.metrics import auprc, best_dice, dice
from AnomalySegLib.preprocessing.case_folder import (
    IMAGE_FILE,
    LABELS_FILE,
    MASK_FILE,
    ModelSpaceCase,
    load_case,
    write_case,
)
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.scoring.volume import AnomalyScorer
from AnomalySegLib.training.checkpoint import CHECKPOINT_FILE
from AnomalySegLib.training.config import load_config
from AnomalySegLib.distributed import DistributedContext
from AnomalySegLib.training.loop import METRICS_FILE
from AnomalySegLib.training.recon_training import train_recon
from AnomalySegLib.training.seg_config import parse_seg_config
from AnomalySegLib.training.seg_training import train_seg

HELD_OUT = "sri24_t1_brain"  # last case id: held out by both stages' split
CPU = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
TUMOURS = (("mrbraintumor1", 9), ("mrbraintumor2", 1))  # Slicer samples and their tumour label values


def _held_out(cases: list[ModelSpaceCase]) -> ModelSpaceCase:
    return next(case for case in cases if case.case_id == HELD_OUT)


def _with_synthetic_anomalies(case: ModelSpaceCase, seed: int) -> ModelSpaceCase:
    """The case with DRAEM anomalies in every slice (inside the brain), as a labelled case."""
    slices = torch.from_numpy(case.image)[:, None]
    masks = torch.from_numpy(case.mask)[:, None]
    result = DraemAnomalyGenerator()(slices, masks, torch.Generator().manual_seed(seed))
    return ModelSpaceCase(
        f"{case.case_id}_synthetic", result.images[:, 0].numpy(), case.mask, result.masks[:, 0].numpy() > 0
    )


def _write_case(case: ModelSpaceCase, folder: Path) -> Path:
    folder.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(case.image.astype(np.float32)), str(folder / IMAGE_FILE))
    sitk.WriteImage(sitk.GetImageFromArray(case.mask.astype(np.uint8)), str(folder / MASK_FILE))
    if case.labels is not None:
        sitk.WriteImage(sitk.GetImageFromArray(case.labels.astype(np.uint8)), str(folder / LABELS_FILE))
    return folder


@pytest.fixture(scope="module")
def stage1(healthy_cases, tmp_path_factory):
    """The tiny cDDPM trained on three real healthy brains (SRI24 held out), saved as a bundle."""
    root = tmp_path_factory.mktemp("stage1")
    bundle, _ = train_recon(healthy_cases, load_config("recon_tiny"), root / "work", device="cpu", progress=False)
    save_bundle(bundle, root / "bundle")
    return load_bundle(root / "bundle")


@pytest.fixture(scope="module")
def sadm(stage1, healthy_cases, tmp_path_factory):
    """The tiny SegUnet trained with synthetic anomalies on the same three brains (SRI24 held out)."""
    work = tmp_path_factory.mktemp("stage2") / "work"
    bundle, outcome = train_seg(stage1, healthy_cases, [], load_config("seg_tiny"), work, progress=False, context=CPU)
    return bundle, outcome, work


@pytest.mark.slow
def test_sadm_beats_stage1_alone_on_held_out_synthetic_anomalies(sadm, healthy_cases):
    bundle, _, _ = sadm
    case = _with_synthetic_anomalies(_held_out(healthy_cases), seed=2024)
    assert case.labels.sum() > 1000
    results = {}
    for name, use_seg in (("stage1", False), ("sadm", True)):
        scores = AnomalyScorer.from_bundle(bundle, "cpu", use_seg=use_seg).score(case.image, case.mask, seed=0)
        results[name] = (best_dice(scores.anomaly_score, case.labels)[0], auprc(scores.anomaly_score, case.labels))
    print(
        f"held-out {HELD_OUT} with DRAEM anomalies: ⌈Dice⌉ / AUPRC stage I only {results['stage1'][0]:.3f} / "
        f"{results['stage1'][1]:.3f}, SADM {results['sadm'][0]:.3f} / {results['sadm'][1]:.3f}"
    )
    stage1_dice, sadm_dice = results["stage1"][0], results["sadm"][0]
    # The paper (DRAEM test set): 11.9 % for cDDPM alone, 76.7 % for SADMres. Tiny CPU models, minutes of training:
    assert stage1_dice < 0.2
    assert sadm_dice > 0.25
    assert sadm_dice > stage1_dice + 0.1 and sadm_dice > 2 * stage1_dice
    assert results["sadm"][1] > results["stage1"][1]


@pytest.mark.slow  # trains Stage I (module fixture)
def test_bundle_records_both_stages_and_validation(sadm, stage1):
    bundle, outcome, work = sadm
    assert set(bundle.components) == {"recon", "seg"}
    assert bundle.component("recon").sha256 == stage1.component("recon").sha256
    assert bundle.component("seg").architecture == load_config("seg_tiny")["model"]
    assert bundle.description["scoring"]["beta"] == 0.5 and "thresholds" not in bundle.description["scoring"]
    provenance = bundle.description["provenance"]["stage2"]
    assert provenance["healthy_validation_cases"] == [HELD_OUT]
    assert HELD_OUT not in provenance["healthy_training_cases"]
    assert provenance["steps"] == load_config("seg_tiny")["training"]["max_steps"]
    assert bundle.description["noise_levels"] == [250, 500, 750]
    logged = [json.loads(line) for line in (work / METRICS_FILE).read_text(encoding="utf-8").splitlines()]
    validations = [record for record in logged if "val/best_dice" in record]
    assert len(validations) >= 2
    # The network learns: validation ⌈Dice⌉ of ŷ on the held-out brain grows, and the loss falls.
    assert validations[-1]["val/best_dice"] > validations[0]["val/best_dice"]
    losses = [record["train/loss"] for record in logged if "train/loss" in record]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert (work / "tensorboard").is_dir() and (work / CHECKPOINT_FILE).is_file()
    assert outcome.validation == bundle.description["metrics"]["stage2_validation"]


@pytest.mark.slow  # trains Stage I (module fixture)
def test_resumed_training_equals_uninterrupted_training(stage1, healthy_cases, tmp_path):
    config = load_config("seg_tiny")
    config["training"].update(batch_size=2, checkpoint_every=2, validation_cases=0, max_steps=4)
    config["lesions"] = {"fraction": 0.5}  # the mixture's draws are part of the resumed random state
    cases = healthy_cases[:2]
    straight, _ = train_seg(stage1, cases, [], config, tmp_path / "straight", progress=False, context=CPU)
    config["training"]["max_steps"] = 2
    train_seg(stage1, cases, [], config, tmp_path / "resumed", progress=False, context=CPU)
    config["training"]["max_steps"] = 4
    resumed, _ = train_seg(stage1, cases, [], config, tmp_path / "resumed", resume=True, progress=False, context=CPU)
    expected, actual = straight.component("seg").state_dict, resumed.component("seg").state_dict
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_lesions_section_mixes_blobs_into_the_synthetic_anomalies():
    config = load_config("seg_tiny")
    assert isinstance(parse_seg_config(config).anomalies, DraemAnomalyGenerator)
    config["lesions"] = {"fraction": 0.25, "radius_range": [2, 5]}
    mixture = parse_seg_config(config).anomalies
    assert isinstance(mixture, AnomalyMixture) and mixture.weights == (0.75, 0.25)
    assert mixture.generators[1] == LesionAnomalyGenerator(radius_range=(2, 5))
    for bad, problem in (({"fraction": 1.5}, "fraction"), ({"radius": 3, "fraction": 0.5}, "radius"),
                         ({"radius_range": [2, 5]}, "fraction")):
        config["lesions"] = bad
        with pytest.raises(InputError, match=problem):
            parse_seg_config(config)


def test_tumours_section_adds_tumour_like_anomalies_to_the_mixture():
    config = load_config("seg_tiny")
    config["lesions"] = {"fraction": 0.3}
    config["tumours"] = {"fraction": 0.2, "radius_range": [3, 6], "appearance": {"oedema_width_range": [0, 0]}}
    mixture = parse_seg_config(config).anomalies
    assert isinstance(mixture, AnomalyMixture) and mixture.weights == pytest.approx((0.5, 0.3, 0.2))
    assert mixture.generators[2] == TumourAnomalyGenerator(
        radius_range=(3, 6), appearance=TumourAppearance(oedema_width_range=(0, 0)))
    del config["lesions"]
    assert parse_seg_config(config).anomalies.weights == pytest.approx((0.8, 0.2))
    for bad, problem in (({"fraction": 0.8}, "add up"), ({"fraction": 0.2, "appearance": {"rim": 1}}, "rim")):
        config["lesions"], config["tumours"] = {"fraction": 0.3}, bad
        with pytest.raises(InputError, match=problem):
            parse_seg_config(config)


@pytest.fixture(scope="module")
def tumour_cases(real_data, tmp_path_factory) -> Path:
    """MRBrainTumor1 and 2 through the real preprocessing with their tumour labels, as case folders."""
    root = tmp_path_factory.mktemp("labelled")
    for name, value in TUMOURS:
        case = preprocess_file(real_data(name), labels_path=real_data(f"{name}_labels"), label_values=[value])
        write_case(case, root / name)
    return root


@pytest.mark.slow
def test_train_with_labels_then_calibrate_from_the_command_line(stage1, healthy_cases, tumour_cases, tmp_path, capsys):
    for name, _ in TUMOURS:
        assert load_case(tumour_cases / name).labels.sum() > 500
    healthy = tmp_path / "healthy"
    for case in healthy_cases[:2]:
        _write_case(case, healthy / case.case_id)
    save_bundle(stage1, tmp_path / "stage1")
    out = tmp_path / "sadm"
    common = ["train-seg", "--recon", str(tmp_path / "stage1"), "--config", "seg_tiny", "--batch-size", "4",
              "--device", "cpu", "--threads", str(torch.get_num_threads()), "--no-progress"]
    assert cli.main([*common, "--labels", str(tumour_cases), "--healthy", str(healthy),
                     "--synthetic-fraction", "0.5", "--max-steps", "4", "--out", str(out)]) == 0
    provenance = load_bundle(out).description["provenance"]["stage2"]
    assert provenance["labelled_training_cases"] == ["mrbraintumor1"]
    assert provenance["labelled_validation_cases"] == ["mrbraintumor2"]
    assert provenance["synthetic_slices_per_batch"] == 2 and provenance["steps"] == 4
    capsys.readouterr()

    # Labelled cases only (no --healthy) also train; then errors the user can fix exit with status 2.
    labels_only = tmp_path / "labels_only"
    assert cli.main([*common, "--labels", str(tumour_cases), "--max-steps", "1", "--out", str(labels_only)]) == 0
    assert load_bundle(labels_only).description["provenance"]["stage2"]["synthetic_slices_per_batch"] == 0
    assert cli.main([*common, "--labels", str(tumour_cases), "--max-steps", "1", "--out", str(out)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert cli.main([*common, "--labels", str(healthy), "--max-steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "labels.nii.gz" in capsys.readouterr().err
    assert cli.main([*common, "--max-steps", "1", "--out", str(tmp_path / "y")]) == 2
    assert "--healthy" in capsys.readouterr().err

    # Calibrate in place on the tumour cases, with healthy-set thresholds and a choice of β (no operating-point
    # search: --lesion-copies 0 keeps the pooled-voxel "val" threshold checked below).
    assert cli.main(["calibrate", "--model", str(out), "--val", str(tumour_cases), "--healthy", str(healthy),
                     "--lesion-copies", "0", "--beta", "0.5", "1", "--device", "cpu", "--threads", str(torch.get_num_threads())]) == 0
    scoring = load_bundle(out).description["scoring"]
    calibration = scoring["calibration"]
    assert scoring["beta"] in (0.5, 1.0) and set(calibration["beta_search"]["validation_dice"]) == {"0.5", "1"}
    assert calibration["validation_cases"] == ["mrbraintumor1", "mrbraintumor2"]
    thresholds = scoring["thresholds"]
    assert set(thresholds) == {"val", "fpr1", "fpr5", "fpr10"}
    assert thresholds["fpr1"] >= thresholds["fpr5"] >= thresholds["fpr10"]
    assert f"Dice {calibration['validation_dice']:.4f}" in capsys.readouterr().out

    # The stored threshold, applied to the validation set with the stored model, gives the reported Dice.
    scorer = AnomalyScorer.from_bundle(load_bundle(out), "cpu")
    scores, truths = [], []
    for name, _ in TUMOURS:
        case = load_case(tumour_cases / name)
        scores.append(scorer.score(case.image, case.mask, seed=calibration["seed"]).anomaly_score.ravel())
        truths.append(case.labels.ravel())
    reproduced = dice(np.concatenate(scores) > thresholds["val"], np.concatenate(truths))
    assert reproduced == pytest.approx(calibration["validation_dice"], abs=1e-12)
    assert calibration["validation_dice"] > 0
    # And the healthy thresholds flag about their rate of healthy in-brain voxels.
    healthy_scores = np.concatenate([
        scorer.score(case.image, case.mask).anomaly_score[case.mask] for case in healthy_cases[:2]
    ])
    for preset, rate in (("fpr1", 0.01), ("fpr5", 0.05), ("fpr10", 0.10)):
        assert np.mean(healthy_scores > thresholds[preset]) <= rate < np.mean(healthy_scores >= thresholds[preset])


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(stage1, healthy_cases, tmp_path):
    healthy = tmp_path / "healthy"
    for case in healthy_cases[:2]:
        _write_case(case, healthy / case.case_id)
    save_bundle(stage1, tmp_path / "stage1")
    out = tmp_path / "sadm"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "AnomalySegLib", "train-seg", "--recon", str(tmp_path / "stage1"), "--healthy", str(healthy),
        "--out", str(out), "--config", "seg_tiny", "--max-steps", "2", "--batch-size", "2", "--device", "cpu",
        "--threads", "1", "--no-progress",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    provenance = load_bundle(out).description["provenance"]["stage2"]
    assert provenance["processes"] == 2 and provenance["steps"] == 2


def test_mask_edge_erosion_moves_the_cut_inward_by_at_most_its_radius():
    """Real brain-mask slices (the template's on the paper grid): each chosen slice loses a rim of 1 or 2
    pixels, the image is zeroed there and untouched elsewhere; probability 0 changes nothing."""
    import torch.nn.functional as F

    from AnomalySegLib.preprocessing.model_space import resample_to_model
    from AnomalySegLib.preprocessing.spec import PAPER_GRID
    from AnomalySegLib.preprocessing.template import load_template
    from AnomalySegLib.training.augment import erode_mask_edge

    template = load_template()
    masks = torch.from_numpy(sitk.GetArrayFromImage(
        resample_to_model(template.mask, sitk.Transform(), PAPER_GRID, binary=True))[10:40, None].astype("float32"))
    images = masks * torch.from_numpy(sitk.GetArrayFromImage(
        resample_to_model(template.t1_brain, sitk.Transform(), PAPER_GRID))[10:40, None]) / 100.0

    same_images, same_masks = erode_mask_edge(images, masks, 0.0, 2, torch.Generator().manual_seed(0))
    assert torch.equal(same_images, images) and torch.equal(same_masks, masks)

    new_images, new_masks = erode_mask_edge(images, masks, 1.0, 2, torch.Generator().manual_seed(0))
    eroded_by_2 = 1.0 - F.max_pool2d(1.0 - masks, 5, stride=1, padding=2)
    assert (new_masks <= masks).all() and (eroded_by_2 <= new_masks).all()
    lost = (masks - new_masks).sum(dim=(1, 2, 3))
    assert (lost > 0).all()  # every slice lost a rim
    assert torch.equal(new_images, images * new_masks)
    again, _ = erode_mask_edge(images, masks, 1.0, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again, new_images)
