"""The paper's protocol (issue #16): configs, best-validation weights, the authors' ⌈Dice⌉, vanished
lesions, the published splits on a layout tree, and the seeded DRAEM test set."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from AnomalySegLib.datasets import get_layout
from AnomalySegLib.datasets.draem_test_set import case_generator, draem_volume, make_draem_test_set
from AnomalySegLib.datasets.prepare import CASES_DIR, FOLDS_DIR, write_split_folders
from AnomalySegLib.datasets.splits import make_paper_splits, paper_split_lists
from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.evaluation.evaluate import (
    COMBINED,
    CaseResult,
    EvaluationResult,
    lesion_vanished,
    paper_case_metrics,
    paper_summary,
    paper_table,
)
from AnomalySegLib.metrics import best_dice, best_dice_bisection, volume_metrics
from AnomalySegLib.preprocessing.case_folder import IMAGE_FILE, MASK_FILE, ModelSpaceCase, load_case
from AnomalySegLib.training.config import load_config
from AnomalySegLib.distributed import init_distributed
from AnomalySegLib.training.loop import LoopSpec, Trainer
from AnomalySegLib.training.recon_training import parse_config
from AnomalySegLib.training.seg_training import parse_seg_config


# --- configurations -------------------------------------------------------------------------------

def test_recon_paper_follows_the_authors_recipe():
    spec, settings, levels = parse_config(load_config("recon_paper"))
    assert spec.noise.kind == "simplex2d_shared"
    assert (spec.noise.octaves, spec.noise.persistence, spec.noise.frequency) == (6, 0.8, 64.0)
    assert levels == (250, 500, 750)
    # 1200 epochs of one random slice per volume, 387 training volumes, batch 32 (drop last): 12 steps/epoch
    assert settings.max_steps == 1200 * (387 // 32)
    assert (settings.batch_size, settings.learning_rate, settings.optimizer) == (32, 1e-4, "adam")
    assert settings.ema_decay == 0.0 and settings.grad_clip is None
    assert settings.select_best == "loss"
    assert settings.loop_settings(progress=False).select_best == "loss"


@pytest.mark.parametrize("name, steps, synthetic", [("seg_paper", 600 * 12, 1.0), ("seg_paper_brats", 600 * 2, 0.0),
                                                    ("seg_paper_atlas", 600 * 5, 0.0)])
def test_seg_paper_follows_the_authors_recipe(name, steps, synthetic):
    config = parse_seg_config(load_config(name))
    training = config.training
    assert training.max_steps == steps and training.synthetic_fraction == synthetic
    assert (training.learning_rate, training.batch_size, training.dice_weight) == (5e-5, 32, 0.0)
    assert training.ema_decay == 0.0 and training.grad_clip is None and training.select_best == "bce"
    recon_augmentation = parse_config(load_config("recon_paper"))[1].augmentation
    assert training.augmentation is not None and training.augmentation == recon_augmentation
    assert config.anomalies.within_brain is False  # anywhere in the slice, as the authors' DRAEM
    assert config.anomalies.threshold_range == (0.5, 0.5)


def test_trainer_keeps_the_best_validation_weights(tmp_path):
    """A real (tiny) training run: the outcome carries the weights of the lowest validation value."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    values = iter([3.0, 1.0, 2.0])  # the second validation (step 4) is the best
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def validate(ema_model):
        seen[len(seen)] = {k: v.detach().clone() for k, v in ema_model.state_dict().items()}
        return {"loss": next(values)}

    trainer = Trainer(
        model, lambda parameters: torch.optim.SGD(parameters, lr=0.1),
        LoopSpec(max_steps=6, ema_decay=0.0, grad_clip=None, checkpoint_every=100, validate_every=2,
                     progress=False, select_best="loss"),
        init_distributed("cpu"), tmp_path,
        batch_fn=lambda step, generator: torch.randn((4, 3), generator=generator),
        loss_fn=lambda m, batch, generator: (m(batch) - 1.0).pow(2).mean(),
        validate_fn=validate,
    )
    outcome = trainer.fit()
    final = {k: v for k, v in unwrap(outcome.model).state_dict().items()}
    kept = outcome.ema_model.state_dict()
    for key, value in seen[1].items():
        assert torch.equal(kept[key], value)
    assert not torch.equal(kept["module.weight"] if "module.weight" in kept else kept["weight"], final["weight"])


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


# --- metrics --------------------------------------------------------------------------------------

def test_bisection_best_dice_hand_checked():
    # Exact optimum: threshold in (0.3, 0.35) → Dice 1. The authors' halving search on [0, 1] compares
    # q = 0.25 (all 4 voxels: Dice 6/7) with q = 0.75 (1 voxel: 2/4), keeps the lower half, and from then
    # on both quarter points predict all 4 voxels: it ends at 6/7 with q = 0.25 / 2**9.
    scores = np.array([0.3, 0.35, 0.4, 1.0])
    truth = np.array([False, True, True, True])
    assert best_dice(scores, truth)[0] == 1.0
    value, threshold = best_dice_bisection(scores, truth)
    assert value == pytest.approx(6 / 7) and threshold == pytest.approx(0.25 / 2**9)
    assert best_dice_bisection(scores, np.zeros(4, bool)) == (0.0, 0.0)
    assert best_dice_bisection(np.zeros(4), truth)[0] == 0.0  # empty range → [0, 1], nothing above


@pytest.mark.parametrize("seed", range(5))
def test_bisection_never_exceeds_the_exact_optimum(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((10, 20, 20)) < 0.05
    scores = np.clip(truth * 0.4 + rng.random(truth.shape) * 0.7, 0, None)
    exact, bisection = best_dice(scores, truth)[0], best_dice_bisection(scores, truth)[0]
    assert 0 < bisection <= exact + 1e-12
    predicted = scores > best_dice_bisection(scores, truth)[1]
    assert bisection == pytest.approx(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))


def test_a_vanished_lesion_counts_as_zero_in_the_paper_summary(healthy_cases):
    """A case whose label file is empty on the grid (lesion vanished) is flagged, left out of the default
    summary (as before) and counted as ⌈Dice⌉ = AUPRC = 0 by the paper's protocol; the metrics of the
    lesion case are real measurements of a map that responds inside its DRAEM lesion."""
    first, second, third = healthy_cases[:3]
    image, labels = draem_volume(first.image, first.mask, case_generator(0, first.case_id))
    cases = [ModelSpaceCase("lesion", image, first.mask, labels),
             ModelSpaceCase("vanished", second.image, second.mask, np.zeros_like(second.mask)),
             ModelSpaceCase("healthy", third.image, third.mask, None)]
    assert [lesion_vanished(case) for case in cases] == [False, True, False]
    score_map = np.abs(image - first.image) + 0.05 * first.image  # high in the lesion, some background
    lesion = volume_metrics(score_map, labels).to_dict()
    lesion.update(paper_case_metrics(score_map, labels))
    results = [CaseResult("lesion", False, int(labels.sum()), {COMBINED: lesion}),
               CaseResult("vanished", True, 0, {COMBINED: {"fpr": 0.0}}, lesion_vanished=True),
               CaseResult("healthy", True, 0, {COMBINED: {"fpr": 0.0}})]
    result = EvaluationResult("m", "d", 0.5, "given", 0, [COMBINED], results)
    assert 0 < lesion["best_dice_bisection"] <= lesion["best_dice"]
    assert result.summary()[COMBINED]["best_dice"]["n"] == 1  # the default summary leaves it out ...
    summary = paper_summary(result)  # ... the paper's protocol counts it as 0
    assert (summary["labelled"], summary["vanished"], summary["vanished_cases"]) == (2, 1, ["vanished"])
    for metric in ("best_dice_bisection", "best_dice", "auprc"):
        stats = summary["variants"][COMBINED][metric]
        assert stats["n"] == 2 and stats["mean"] == pytest.approx(lesion[metric] / 2)
    assert "1 have no lesion voxel" in paper_table(result)


# --- splits on a layout tree ----------------------------------------------------------------------

def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.fixture(scope="module")
def paper_tree(tmp_path_factory):
    """Every case of the authors' lists as an (empty) file in each dataset's published layout:
    discovery only reads the paths."""
    root = tmp_path_factory.mktemp("paper_layouts")
    lists = paper_split_lists()
    ixi = set(lists["ixi"]["test"]).union(*(set(f["train"]) | set(f["val"]) for f in lists["ixi"]["folds"]))
    for case in ixi:
        _touch(root / "ixi" / "IXI-T1" / f"{case}-T1.nii.gz")
    for case in lists["brats21"]["test"] + lists["brats21"]["val"]:
        for suffix in ("t1", "seg"):
            _touch(root / "brats21" / case / f"{case}_{suffix}.nii.gz")
    for case in lists["atlas2"]["test"] + lists["atlas2"]["val"]:
        anat = root / "atlas2" / "Training" / f"R{case[5:8]}" / case / "ses-1" / "anat"
        _touch(anat / f"{case}_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz")
        _touch(anat / f"{case}_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz")
    return root


def test_paper_split_sizes_on_the_published_layouts(paper_tree):
    ids = {name: [f.case_id for f in get_layout(name).discover(paper_tree / name)]
           for name in ("ixi", "brats21", "atlas2")}
    assert {name: len(found) for name, found in ids.items()} == {"ixi": 566, "brats21": 1251, "atlas2": 655}

    ixi = make_paper_splits("ixi", ids["ixi"])
    assert len(ixi["folds"]) == 5 and not ixi["missing"] and not ixi["unlisted"]
    # The published CSVs as they are: 387 training rows (374–377 distinct subjects), 44 validation, 160
    # test rows (157 distinct); 7–9 training subjects per fold are also test subjects.
    assert [len(f["train"]) for f in ixi["folds"]] == [374, 374, 376, 377, 377]
    assert [len(f["val"]) for f in ixi["folds"]] == [44] * 5
    assert all(len(f["test"]) == 157 for f in ixi["folds"])
    assert [len(f["train_test_overlap"]) for f in ixi["folds"]] == [9, 9, 9, 7, 8]
    # Nor are the validation folds disjoint (181 subjects in 5 x 44), and a few validation subjects
    # are in the same fold's training list.
    assert len(set().union(*(set(f["val"]) for f in ixi["folds"]))) == 181
    assert [len(set(f["train"]) & set(f["val"])) for f in ixi["folds"]] == [0, 0, 2, 3, 3]

    for name, (test, train) in {"brats21": (1151, 90), "atlas2": (480, 165)}.items():
        splits = make_paper_splits(name, ids[name])
        assert not splits["missing"]
        for fold in splits["folds"]:
            assert (len(fold["test"]), len(fold["labelled_train"]), len(fold["labelled_val"])) == (test, train, 10)
            assert not set(fold["test"]) & set(fold["val"]) and fold["train"] == []


def test_paper_splits_report_missing_cases_and_refuse_other_datasets(paper_tree):
    ids = [f.case_id for f in get_layout("brats21").discover(paper_tree / "brats21")]
    splits = make_paper_splits("brats21", ids[5:] + ["BraTS2021_99999"])
    assert splits["missing"] == sorted(ids[:5]) and splits["unlisted"] == ["BraTS2021_99999"]
    assert "BraTS2021_99999" not in splits["folds"][0]["test"]
    with pytest.raises(InputError, match="ixi, brats21, atlas2"):
        make_paper_splits("wmh", ids)


def test_split_folders_link_the_case_folders(tmp_path):
    for case in ("a", "b", "c"):
        (tmp_path / CASES_DIR / case).mkdir(parents=True)
        (tmp_path / CASES_DIR / case / IMAGE_FILE).write_bytes(case.encode())
    splits = {"folds": [{"fold": 0, "train": ["a", "b"], "val": [], "test": ["c"], "labelled_train": [],
                         "labelled_val": []}]}
    write_split_folders(tmp_path, splits)
    write_split_folders(tmp_path, splits)  # idempotent
    fold = tmp_path / FOLDS_DIR / "fold0"
    assert sorted(os.listdir(fold / "train")) == ["a", "b"] and os.listdir(fold / "test") == ["c"]
    assert (fold / "test" / "c" / IMAGE_FILE).read_bytes() == b"c"


# --- the DRAEM test set ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def healthy_root(tmp_path_factory, healthy_cases):
    root = tmp_path_factory.mktemp("ixi_test")
    for case in healthy_cases[:2]:
        (root / case.case_id).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(case.image), str(root / case.case_id / IMAGE_FILE))
        sitk.WriteImage(sitk.GetImageFromArray(case.mask.astype(np.uint8)), str(root / case.case_id / MASK_FILE))
    return root


def test_draem_test_set_is_seeded_and_reproducible(tmp_path, healthy_root, healthy_cases):
    first = make_draem_test_set(healthy_root, tmp_path / "a", seed=1)
    again = make_draem_test_set(healthy_root, tmp_path / "b", seed=1)
    other = make_draem_test_set(healthy_root, tmp_path / "c", seed=2)
    one = make_draem_test_set(healthy_root, tmp_path / "d", seed=1, case_ids=[healthy_cases[1].case_id])
    assert [p.name for p in first] == sorted(case.case_id for case in healthy_cases[:2])
    for source, (a, b, c) in zip(sorted(healthy_cases[:2], key=lambda case: case.case_id), zip(first, again, other)):
        case, twin, different = load_case(a), load_case(b), load_case(c)
        assert np.array_equal(case.image, twin.image) and np.array_equal(case.labels, twin.labels)
        assert not np.array_equal(case.labels, different.labels)
        assert case.labels.sum() > 0 and not (case.labels & ~source.mask).any()
        assert np.array_equal(case.mask, source.mask)
        assert np.allclose(case.image[~case.labels], source.image[~case.labels])  # only lesions change
        assert not np.allclose(case.image[case.labels], source.image[case.labels])
        brain_slices = source.mask.any((1, 2))
        assert case.labels.any((1, 2))[brain_slices].mean() > 0.5  # anomalies in most brain slices
        info = json.loads((a / "preprocessing.json").read_text(encoding="utf-8"))
        assert info["info"]["synthetic_anomalies"]["seed"] == 1
    # Order and subset do not change a case's anomalies.
    assert np.array_equal(load_case(one[0]).labels, load_case(tmp_path / "a" / one[0].name).labels)
    with pytest.raises(OutputExistsError):
        make_draem_test_set(healthy_root, tmp_path / "a", seed=1)
