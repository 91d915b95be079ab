#!/usr/bin/env python
"""Generalization of a model to scans it never saw (issue #13): held-out healthy scans, synthetic lesions in
them, MRBrainTumor1/2 as they are and re-acquired as thick-slice clinical scans, and the intensity-only
baseline on the same cases.

Folds: ``--folds FILE.json`` maps a fold name to ``{"model": BUNDLE, "held_out": [sample_data names]}``
(leave-one-source-out: each fold's model never saw its held-out sources). Without it, one fold
``default``: the bundled default model on the healthy single-subject scans its recipe kept out of training
(``provenance.default_model``: the calibration sources, which chose its thresholds, and the test sources,
which took part in no choice). Each fold's model is measured on:

- **tumour**: MRBrainTumor1 (label 9) / MRBrainTumor2 (label 1) as they are, and re-acquired with
  :func:`~AnomalySegLib.augmentation.acquisition.clinical_reacquisition` at 5 and 6.5 mm (labels carried);
- **healthy**: each held-out scan unchanged and re-acquired at 6.5 mm: flagged ml and findings at the
  model's operating point, and where the flagged voxels sit (intensity tissue class, distance to the
  brain-mask rim, z-band and y-band of the brain);
- **synthetic**: 3D lesions in each held-out scan (:func:`insert_lesion`): blobs and DRAEM textures, bright
  and dark, centred in grey or white matter, 0.5–30 ml (log-uniform, seeded); and tumour-like lesions
  (:func:`insert_tumour`: enhancing rim, darker core, oedema, mass effect, the engine's
  :func:`~AnomalySegLib.anomalies.tumour.paint_tumour` in 3D, seeded);
- **baseline**: "bright = abnormal" (x − median), "dark = abnormal" (median − x) and |x − median| inside the
  brain, on the same labelled cases;
- **diagnosis** (healthy scans): where the SegUnet fires (ŷ > 0.5) compared with the rest of the brain
  (intensity, residual x − x̂, rim distance, residual bias), and what changes with a tighter mask, a
  stronger N4, or x̂ = x fed to the SegUnet; (tumours) ŷ and x − x̂ in the tumour, ŷ > 0.5 farther than
  :data:`AWAY_FROM_TUMOUR_MM` from it, and ⌈Dice⌉ of ŷ with and without the residual (x̂ := x).

Everything is on the model grid; "flagged" and "Dice@op" are the bundle's operating point (``val``
threshold and clean-up, :func:`AnomalySegLib.scoring.operating_point.apply_operating_point`), as
``segment`` applies it. Preprocessed cases and scores are cached in
``--work`` (a rerun resumes; a score is reused only for the same input, :func:`input_digest`, and a fold's
folder only for the same model, :func:`check_cache_model`). Writes the ``<!-- generalization -->`` section of BENCHMARKS.md.

Usage::

    nice -n 10 python benchmarks/generalization.py [--folds folds.json] [--sizes 4] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage
from skimage.filters import threshold_multiotsu

from AnomalySegLib import sample_data
from AnomalySegLib.anomalies import DraemAnomalyGenerator, TumourAppearance, paint_tumour
from AnomalySegLib.augmentation.acquisition import clinical_reacquisition, simulate_acquisition
from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.device import precision_name
from AnomalySegLib.evaluation import resolve_threshold
from AnomalySegLib.metrics import auprc, best_dice, dice
from AnomalySegLib.pipeline import default_model_path
from AnomalySegLib.preprocessing.pipeline import preprocess_image
from AnomalySegLib.preprocessing.model_space import resample_to_model
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.preprocessing.template import load_template
from AnomalySegLib.recipe_record import recipe_record, trained_sources
from AnomalySegLib.scoring.operating_point import CleanUp, apply_operating_point
from AnomalySegLib.scoring.volume import AnomalyScorer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_report import machine, publish  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from calibrate_default_model import default_model_split  # noqa: E402

LOG = logging.getLogger("generalization")
#: BENCHMARKS.md section of the explanation; each fold has its own after it (fold_section_name).
SECTION = "generalization"
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
TUMOURS = {"mrbraintumor1": 9, "mrbraintumor2": 1}
REACQUIRED_MM = (5.0, 6.5)
HEALTHY_REACQUIRED_MM = 6.5
LESION_ML = (0.5, 30.0)
LESION_SEED = 13000
TUMOUR_SEED = 17000
RIM_BANDS_MM = (4.0, 10.0)
FIRES = 0.5  # SegUnet probability at which it "fires"
#: Edge of a model-grid voxel (mm) and its volume (ml): every measure here assumes it (checked per fold).
VOXEL_MM = 2.0
VOXEL_ML = VOXEL_MM ** 3 / 1000.0
#: Firings farther than this from a tumour's label are false positives in the tumour diagnosis (mm).
AWAY_FROM_TUMOUR_MM = 6.0
#: "Bright" normal tissue in the tumour diagnosis: above this percentile of the brain away from the tumour
#: (on a contrast-enhanced T1: vessels, venous sinuses, dura, choroid plexus) ...
BRIGHT_PERCENTILE = 90.0
#: ... and the brightest normal tissue: above this one.
BRIGHTEST_PERCENTILE = 99.0
STRONG_N4 = {"shrink_factor": 2, "iterations_per_level": (50, 50, 50, 50), "convergence_threshold": 1e-4}
TIGHTER_MASK_MM = 4.0
#: Below this intensity (model space, [0, 1]) a brain-mask voxel is taken as "not scanned" (outside the FOV).
EMPTY_LEVEL = 1e-3


class NotCached(Exception):
    """``--cached-only``: this case or its scores were not computed by an earlier run."""


#: Set by ``--cached-only``: report from the cache, compute nothing new.
CACHED_ONLY = False


@dataclass
class Case:
    """One model-space case ``[Z, Y, X]`` with its ground truth (``None`` = healthy) and preprocessing info."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray | None
    info: dict


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=Path, help="JSON: fold → {model, held_out} (default: bundled model)")
    parser.add_argument("--work", type=Path, default=REPOSITORY_ROOT / ".cache" / "generalization")
    parser.add_argument("--lesions-per-host", type=int, default=4,
                        help="synthetic lesion volumes per held-out scan (cycles blob/DRAEM × bright/dark × GM/WM)")
    parser.add_argument("--tumours-per-host", type=int, default=2,
                        help="tumour-like lesion volumes per held-out scan (cycles GM/WM centre)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-diagnosis", action="store_true")
    parser.add_argument("--cached-only", action="store_true",
                        help="report only the cases an earlier run preprocessed and scored (computes nothing new)")
    parser.add_argument("--no-write", action="store_true", help="never write BENCHMARKS.md")
    return parser.parse_args(argv)


def held_out_roles(bundle, held_out: list[str]) -> dict[str, str]:
    """What each held-out scan was to the model, from its recipe's record (``provenance.default_model``):
    ``"calibration"`` (chose its operating point, never trained on), ``"test"`` (took part in no choice) or
    ``"not recorded"``.

    Raises:
        SystemExit: the model trained on a held-out scan (the fold would measure something easier than
            unseen data).
    """
    recipe = recipe_record(bundle.description)
    leaked = sorted(set(trained_sources(bundle.description) or []) & set(held_out))
    if leaked:
        raise SystemExit(f"{bundle.path}: trained on {', '.join(leaked)}, which the fold holds out")
    return {name: "calibration" if name in recipe.get("calibration_sources", ())
            else "test" if name in recipe.get("test_sources", ()) else "not recorded" for name in held_out}


def training_record(bundle) -> dict:
    """What the recipe's record (``provenance.default_model``) says of the model's training: sources, steps and
    budgets of both stages, the model it was fine-tuned from; empty for a bundle without that record."""
    recipe = recipe_record(bundle.description)
    if "training_sources" not in recipe:
        return {}
    initial = recipe.get("initialised_from") or {}
    return {"sources": recipe["training_sources"], "budget_minutes": recipe.get("budget_minutes", {}),
            "steps": {stage: recipe.get(stage, {}).get("steps") for stage in ("stage1", "stage2")},
            "threads": recipe.get("threads"), "initialised_from": initial.get("name")}


def training_words(record: dict) -> str:
    """One sentence of :func:`training_record` for a fold's section ("" without a record)."""
    if not record:
        return ""
    budget, steps = record["budget_minutes"], record["steps"]
    start = f"fine-tuned from `{record['initialised_from']}`" if record["initialised_from"] else "from scratch"
    return (f" The model trained on {', '.join(record['sources'])} ({start}; Stage I {steps['stage1']} steps in "
            f"{budget.get('stage1', float('nan')):g} min, Stage II {steps['stage2']} steps in "
            f"{budget.get('stage2', float('nan')):g} min, {record['threads']} CPU thread(s)).")


def load_folds(path: Path | None) -> dict[str, dict]:
    if path is None:
        calibration, test = default_model_split(load_bundle(default_model_path()))
        return {"default": {"model": str(default_model_path()), "held_out": [*calibration, *test]}}
    folds = json.loads(path.read_text(encoding="utf-8"))
    for name, fold in folds.items():
        if "model" not in fold or "held_out" not in fold:
            raise SystemExit(f"{path}: fold {name!r} needs 'model' and 'held_out'")
    return folds


# ---------------------------------------------------------------- cases (native → model space, cached)

def model_space(key: str, work: Path, spec: PreprocessingSpec, make) -> Case:
    """``make() → (native image, native 0/1 labels or None)`` preprocessed, cached as ``work/<key>.npz``."""
    stored = work / f"{key}.npz"
    if not stored.is_file() and CACHED_ONLY:
        raise NotCached(key)
    if not stored.is_file():
        image, labels = make()
        case = preprocess_image(image, spec=spec, labels=labels, image_path=key)
        arrays = case.arrays()
        work.mkdir(parents=True, exist_ok=True)
        partial = work / f".{key}.partial.npz"
        extra = {} if arrays[2] is None else {"labels": arrays[2]}
        info = json.dumps({k: case.info[k] for k in ("mask_source", "registration", "brain_voxels")})
        np.savez_compressed(partial, image=arrays[0], mask=arrays[1], info=np.array(info), **extra)
        partial.replace(stored)
    with np.load(stored, allow_pickle=False) as data:
        labels = data["labels"].astype(bool) if "labels" in data else None
        return Case(key, data["image"], data["mask"].astype(bool), labels, json.loads(str(data["info"])))


def native(name: str, label_value: int | None = None) -> tuple[sitk.Image, sitk.Image | None]:
    image = sitk.ReadImage(str(sample_data.fetch(name)), sitk.sitkFloat32)
    if label_value is None:
        return image, None
    labels = sitk.ReadImage(str(sample_data.fetch(f"{name}_labels")))
    selected = sitk.Cast(labels == label_value, sitk.sitkUInt8)
    selected.CopyInformation(image)
    return image, selected


def reacquired(name: str, thickness_mm: float, label_value: int | None = None):
    """``make`` function: ``name`` re-acquired with the clinical preset (seed fixed per thickness)."""

    def make():
        image, labels = native(name, label_value)
        seed = int(thickness_mm * 10)
        out = simulate_acquisition(image, clinical_reacquisition(thickness_mm, seed), seed=seed, labels=labels)
        return out.image, out.labels

    return make


# ---------------------------------------------------------------- synthetic 3D lesions

def tissue_classes(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """0 outside the brain, 1 CSF-like, 2 grey-matter-like, 3 white-matter-like (3-class Otsu in the brain)."""
    low, high = threshold_multiotsu(image[mask], classes=3)
    classes = np.where(image < low, 1, np.where(image < high, 2, 3)).astype(np.uint8)
    return np.where(mask, classes, 0).astype(np.uint8)


def lesion_kind(index: int) -> tuple[str, bool, int]:
    """``(kind, bright, tissue class)`` of lesion ``index``: (blob|draem) × (bright|dark) × (GM=2|WM=3)."""
    return ("blob", "draem")[index % 2], (index // 2) % 2 == 0, 2 if (index // 4) % 2 == 0 else 3


def lesion_name(host: str, index: int) -> str:
    kind, bright, tissue = lesion_kind(index)
    return f"{host}+{kind}_{'bright' if bright else 'dark'}_{'gm' if tissue == 2 else 'wm'}_{index}"


def lesion_geometry(case: Case, tissue: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Where a synthetic 3D lesion goes: volume log-uniform in :data:`LESION_ML`, an ellipsoid of that volume
    (axis ratios U[0.7, 1.3]) around a voxel of tissue class ``tissue`` at least 3 voxels deep in the brain,
    its boundary perturbed by smoothed noise.

    Returns:
        ``(irregular distance, smooth distance, centre voxel [3], radius in voxels)``: the distances are
        ``[Z, Y, X]`` and normalised (1 on the boundary, the irregular one on the perturbed boundary).
    """
    volume_ml = float(np.exp(rng.uniform(*np.log(LESION_ML))))
    voxels = volume_ml * 1000.0 / VOXEL_MM ** 3
    classes = tissue_classes(case.image, case.mask)
    depth = ndimage.distance_transform_edt(case.mask)
    candidates = np.argwhere((classes == tissue) & (depth >= 3))
    centre = candidates[rng.integers(len(candidates))]
    radius = (3.0 * voxels / (4.0 * math.pi)) ** (1.0 / 3.0)
    axes = radius * rng.uniform(0.7, 1.3, 3)
    axes *= radius / np.prod(axes) ** (1.0 / 3.0)
    grid = np.indices(case.image.shape).astype(np.float32)
    distance = np.sqrt(sum(((grid[i] - centre[i]) / axes[i]) ** 2 for i in range(3)))
    bumps = ndimage.gaussian_filter(rng.normal(size=case.image.shape), max(1.0, radius / 2))
    bumps *= 0.25 / max(bumps.std(), 1e-6)
    return distance + bumps, distance, centre, float(radius)


def insert_lesion(case: Case, index: int, seed: int) -> Case:
    """A 3D lesion in ``case`` (:func:`lesion_geometry`), its kind cycling with ``index``:
    (blob|DRAEM) × (bright|dark) × (grey|white matter centre).

    Blob: ``I + s·S·(v − I)`` with
    ``v`` ~ U[0.85, 1] (bright) or U[0, 0.15] (dark), ``s`` ~ U[0.6, 0.9], ``S`` the shape softened by a
    1-voxel Gaussian. DRAEM: the engine's :class:`DraemAnomalyGenerator` texture slice by slice inside the
    shape (opacity 0.7–1); the size of its change ``|T_blend − I|`` is added (bright) or subtracted (dark),
    since the Perlin texture (mean ~0.5) would otherwise nearly always darken the brain. Truth: shape voxels
    whose intensity changed by ≥ 0.05.
    """
    rng = np.random.default_rng(seed)
    kind, bright, tissue = lesion_kind(index)
    irregular, _, _, _ = lesion_geometry(case, tissue, rng)
    shape = (irregular < 1.0) & case.mask
    image = case.image.copy()
    if kind == "blob":
        target = rng.uniform(0.85, 1.0) if bright else rng.uniform(0.0, 0.15)
        soft = ndimage.gaussian_filter(shape.astype(np.float32), 1.0) * case.mask
        image = image + rng.uniform(0.6, 0.9) * soft * (target - image)
    else:
        slices = torch.from_numpy(case.image)[:, None]
        generator = DraemAnomalyGenerator(threshold_range=(-2.0, -2.0), opacity_range=(0.7, 1.0))
        drawn = generator(slices, torch.from_numpy(shape)[:, None], torch.Generator().manual_seed(seed))
        change = np.abs(drawn.images[:, 0].numpy().astype(np.float32) - case.image)
        image = case.image + (change if bright else -change)
    changed = np.abs(image - case.image) >= 0.05
    truth = shape & changed
    return Case(lesion_name(case.name, index), np.clip(image, 0.0, 1.0) * case.mask, case.mask, truth, case.info)


def tumour_name(host: str, index: int) -> str:
    return f"{host}+tumour_{'gm' if index % 2 == 0 else 'wm'}_{index}"


def insert_tumour(case: Case, index: int, seed: int) -> Case:
    """A 3D tumour-like lesion in ``case``: :func:`lesion_geometry` (centre in grey matter for even
    ``index``, white matter for odd) painted by the engine's :func:`paint_tumour` with a
    :class:`TumourAppearance` draw (enhancing rim, darker core, oedema, mass effect). Truth: the tumour and
    its visible oedema."""
    rng = np.random.default_rng(seed)
    irregular, smooth, centre, radius = lesion_geometry(case, 2 if index % 2 == 0 else 3, rng)
    volume = lambda array: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]  # noqa: E731
    appearance = TumourAppearance()
    drawn = paint_tumour(volume(case.image), volume(case.mask) > 0, volume(irregular), volume(smooth),
                         torch.tensor(centre, dtype=torch.float32)[None], torch.tensor([radius]),
                         appearance.draw(1, torch.Generator().manual_seed(seed), torch.device("cpu")), appearance)
    image, truth = drawn.images[0, 0].numpy(), drawn.masks[0, 0].numpy() > 0
    return Case(tumour_name(case.name, index), image * case.mask, case.mask, truth, case.info)


# ---------------------------------------------------------------- scoring and measures

def input_digest(case: Case) -> str:
    """A short SHA-256 of what the model scores (image and mask): cached scores of other input are stale."""
    digest = hashlib.sha256(np.ascontiguousarray(case.image, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(case.mask, dtype=bool).tobytes())
    return digest.hexdigest()[:16]


def scored(scorer: AnomalyScorer, case: Case, work: Path, tag: str) -> dict[str, np.ndarray]:
    """Scores of ``case`` (cached per fold ``tag``): reconstruction, probability, anomaly score, mask.

    The cache stores :func:`input_digest`; a stored score of other input (a generator changed, a case made
    differently under the same name, or a file from before the digest) is recomputed, never reported.
    """
    stored = work / "scores" / tag / f"{case.name}.npz"
    digest = input_digest(case)
    if stored.is_file():
        with np.load(stored, allow_pickle=False) as data:
            if "input_digest" in data.files and str(data["input_digest"]) == digest:
                return {key: data[key] for key in data.files if key != "input_digest"}
        LOG.warning("%s: cached scores are of other input; scoring again", stored)
    if CACHED_ONLY:
        raise NotCached(case.name)
    result = scorer.score(case.image, case.mask, seed=0)
    stored.parent.mkdir(parents=True, exist_ok=True)
    partial = stored.with_name(f".{stored.stem}.partial.npz")
    scores = {"reconstruction": result.reconstruction, "score": result.anomaly_score, "mask": result.mask,
              "probability": result.segmentation_probability}
    np.savez_compressed(partial, input_digest=np.array(digest), **scores)
    partial.replace(stored)
    return scores


def check_cache_model(work: Path, identity: dict[str, str]) -> None:
    """Refuse a ``--work`` folder whose fold cache holds another model's scores (``identity``: component →
    weights SHA-256, recorded in ``work/model.json`` on first use)."""
    record = work / "model.json"
    if record.is_file():
        cached = json.loads(record.read_text(encoding="utf-8"))
        if cached != identity:
            raise SystemExit(f"{work} holds the scores of another model ({cached}); give this model another --work")
        return
    work.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(".model.partial.json")
    partial.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    partial.replace(record)


def flagged(score: np.ndarray, threshold: float, clean_up: CleanUp) -> tuple[float, int, np.ndarray]:
    """``(ml, findings, mask)`` of the operating point (``score > threshold``, then ``clean_up``) on the
    model grid (:data:`VOXEL_MM`)."""
    mask = apply_operating_point(score, (VOXEL_MM,) * 3, threshold, clean_up)
    _, findings = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    return float(mask.sum()) * VOXEL_ML, int(findings), mask


def baseline_scores(case: Case) -> dict[str, np.ndarray]:
    """Intensity-only scores in the brain: bright (x − m), dark (m − x), |x − m|; m the brain median."""
    median = float(np.median(case.image[case.mask]))
    difference = np.where(case.mask, case.image - median, 0.0)
    return {"bright": difference, "dark": -difference, "abs": np.abs(difference)}


def labelled_row(case: Case, scores: dict, threshold: float, clean_up: CleanUp) -> dict:
    brain, truth = case.mask, case.labels
    ml, findings, mask = flagged(scores["score"], threshold, clean_up)
    row = {"case": case.name, "true_ml": float(truth.sum()) * VOXEL_ML,
           "best_dice": best_dice(scores["score"][brain], truth[brain])[0],
           "auprc": auprc(scores["score"][brain], truth[brain]), "dice_op": dice(mask, truth),
           "flagged_ml": ml, "findings": findings}
    for name, values in baseline_scores(case).items():
        row[f"baseline_{name}"] = best_dice(values[brain], truth[brain])[0]
    return row


def where(mask_flagged: np.ndarray, case: Case) -> dict[str, float]:
    """Share (%) of flagged voxels per tissue class, rim band, z-band and y-band of the brain."""
    total = max(int(mask_flagged.sum()), 1)
    classes = tissue_classes(case.image, case.mask)
    depth = ndimage.distance_transform_edt(case.mask, sampling=VOXEL_MM)
    z = np.nonzero(case.mask.any(axis=(1, 2)))[0]
    y = np.nonzero(case.mask.any(axis=(0, 2)))[0]
    zz = np.arange(case.mask.shape[0])[:, None, None]
    yy = np.arange(case.mask.shape[1])[None, :, None]
    zband = np.broadcast_to(np.digitize(zz, np.linspace(z[0], z[-1] + 1, 4)[1:3]), case.mask.shape)
    yband = np.broadcast_to(np.digitize(yy, np.linspace(y[0], y[-1] + 1, 4)[1:3]), case.mask.shape)
    rim = np.digitize(depth, RIM_BANDS_MM)
    share = lambda selection: 100.0 * int((mask_flagged & selection).sum()) / total  # noqa: E731
    return {"csf": share(classes == 1), "gm": share(classes == 2), "wm": share(classes == 3),
            "rim<4": share(rim == 0), "rim4-10": share(rim == 1), "rim>10": share(rim == 2),
            "inferior": share(zband == 0), "middle": share(zband == 1), "superior": share(zband == 2),
            "anterior": share(yband == 0), "central": share(yband == 1), "posterior": share(yband == 2)}


def healthy_row(case: Case, scores: dict, threshold: float, clean_up: CleanUp) -> dict:
    ml, findings, mask = flagged(scores["score"], threshold, clean_up)
    empty = 100.0 * float((case.mask & (case.image < EMPTY_LEVEL)).sum()) / max(int(case.mask.sum()), 1)
    return {"case": case.name, "flagged_ml": ml, "findings": findings, "empty": empty, **where(mask, case)}


def template_on_grid(spec: PreprocessingSpec) -> np.ndarray:
    """The preprocessing template's skull-stripped T1 on the model grid ``[Z, Y, X]`` (model space is
    template space: identity transform)."""
    template = load_template(spec.template)
    return sitk.GetArrayFromImage(resample_to_model(template.t1_brain, sitk.Transform(), spec.grid)).astype(np.float32)


def local_correlation(a: np.ndarray, b: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Gaussian-windowed (σ in voxels) Pearson correlation of two volumes, voxel by voxel."""
    mean_a, mean_b = ndimage.gaussian_filter(a, sigma), ndimage.gaussian_filter(b, sigma)
    cov = ndimage.gaussian_filter(a * b, sigma) - mean_a * mean_b
    var_a = ndimage.gaussian_filter(a * a, sigma) - mean_a ** 2
    var_b = ndimage.gaussian_filter(b * b, sigma) - mean_b ** 2
    return cov / np.sqrt(np.maximum(var_a * var_b, 1e-8))


def diagnosis_row(case: Case, scores: dict, template: np.ndarray) -> dict:
    """Where ŷ > 0.5 versus the rest of the brain: intensity, residual, rim distance, residual bias, and the
    local correlation with the template (low = registration residue or anatomy unlike the template's)."""
    brain = scores["mask"].astype(bool)
    fires = (scores["probability"] > FIRES) & brain
    rest = brain & ~fires
    x, residual = case.image, case.image - scores["reconstruction"]
    depth = ndimage.distance_transform_edt(case.mask, sampling=VOXEL_MM)
    wm = tissue_classes(case.image, case.mask) == 3
    smooth_wm = ndimage.gaussian_filter(np.where(wm, x, 0.0), 5.0) / np.maximum(
        ndimage.gaussian_filter(wm.astype(np.float32), 5.0), 1e-3)
    mean = lambda values, selection: float(values[selection].mean()) if selection.any() else math.nan  # noqa: E731
    return {"case": case.name, "fires_ml": float(fires.sum()) * VOXEL_ML,
            "intensity_ratio": mean(x, fires) / mean(x, rest),
            "residual_fires": mean(residual, fires), "residual_rest": mean(residual, rest),
            "abs_residual_fires": mean(np.abs(residual), fires), "abs_residual_rest": mean(np.abs(residual), rest),
            "rim_mm_fires": float(np.median(depth[fires])) if fires.any() else math.nan,
            "rim_mm_rest": float(np.median(depth[rest])),
            "wm_bias_cv": float(smooth_wm[wm].std() / smooth_wm[wm].mean()),
            "wm_local_ratio_fires": mean(smooth_wm, fires & wm) / mean(smooth_wm, wm),
            "registration_metric": float(case.info["registration"]["metric"]),
            "template_ncc_fires": mean(local_correlation(x, template), fires),
            "template_ncc_rest": mean(local_correlation(x, template), rest),
            "mask_source": case.info["mask_source"]}


def probability_without_residual(scorer: AnomalyScorer, case: Case) -> np.ndarray:
    """ŷ with x̂ := x (the SegUnet sees no residual): what the decision rests on besides x − x̂."""
    image = torch.from_numpy(case.image)
    levels = torch.stack([image] * len(scorer.reconstructor.noise_levels))  # [L, Z, Y, X]
    with torch.no_grad():
        return scorer._segmentation_probability(image.to(scorer.device), levels).cpu().numpy()  # noqa: SLF001


def cheap_experiments(scorer: AnomalyScorer, case: Case, scores: dict) -> dict:
    """ŷ > 0.5 ml and flagged ml unchanged, and ŷ > 0.5 with x̂ := x (one SegUnet pass, no Stage I)."""
    brain = scores["mask"].astype(bool)
    fires = (scores["probability"] > FIRES) & brain
    no_residual = probability_without_residual(scorer, case)
    return {"case": case.name, "fires_ml": float(fires.sum()) * VOXEL_ML,
            "no_residual_fires_ml": float(((no_residual > FIRES) & brain).sum()) * VOXEL_ML,
            "no_residual_overlap": dice(no_residual > FIRES, fires) if fires.any() else math.nan}


def tumour_diagnosis_row(scorer: AnomalyScorer, case: Case, scores: dict) -> dict:
    """What the SegUnet's answer on a labelled case rests on: ŷ inside the label, ŷ > 0.5 away from it
    (farther than :data:`AWAY_FROM_TUMOUR_MM`, model-grid ml) and the residual x − x̂ in both, what the tissue
    firing away is (% within the first rim band of the mask edge, % at or above the
    :data:`BRIGHT_PERCENTILE` of the normal brain, and how much of the brightest normal tissue fires), and
    ⌈Dice⌉ of ŷ with the reconstruction and with x̂ := x (the residual taken away)."""
    brain = scores["mask"].astype(bool)
    truth = case.labels & brain
    probability, residual = scores["probability"], case.image - scores["reconstruction"]
    near = ndimage.distance_transform_edt(~truth, sampling=VOXEL_MM) <= AWAY_FROM_TUMOUR_MM
    normal = brain & ~near
    away = (probability > FIRES) & normal
    depth = ndimage.distance_transform_edt(brain, sampling=VOXEL_MM)
    bright, brightest = np.percentile(case.image[normal], [BRIGHT_PERCENTILE, BRIGHTEST_PERCENTILE])
    share = lambda selection, within: 100.0 * float(selection[within].mean()) if within.any() else math.nan  # noqa: E731
    return {"case": case.name, "tumour_probability": float(probability[truth].mean()),
            "tumour_fires_pct": 100.0 * float((probability[truth] > FIRES).mean()),
            "tumour_residual": float(residual[truth].mean()),
            "away_fires_ml": float(away.sum()) * VOXEL_ML,
            "away_residual": float(residual[away].mean()) if away.any() else math.nan,
            "away_intensity": float(case.image[away].mean()) if away.any() else math.nan,
            "away_rim_pct": share(depth < RIM_BANDS_MM[0], away),
            "away_bright_pct": share(case.image >= bright, away),
            "brightest_fires_pct": share(probability > FIRES, normal & (case.image >= brightest)),
            "probability_best_dice": best_dice(probability[brain], truth[brain])[0],
            "no_residual_best_dice": best_dice(probability_without_residual(scorer, case)[brain], truth[brain])[0]}


def tight_mask_experiment(scorer: AnomalyScorer, case: Case, scores: dict, work: Path, tag: str,
                          threshold: float, clean_up: CleanUp) -> dict:
    """The same scan with the brain mask eroded by :data:`TIGHTER_MASK_MM` and the image zeroed outside it."""
    brain = scores["mask"].astype(bool)
    fires = (scores["probability"] > FIRES) & brain
    eroded = ndimage.binary_erosion(case.mask, iterations=int(TIGHTER_MASK_MM / VOXEL_MM))
    tight = Case(f"{case.name}~tight", case.image * eroded, eroded, None, case.info)
    tight_scores = scored(scorer, tight, work, tag)
    return {"flagged_ml": flagged(scores["score"], threshold, clean_up)[0],
            "tight_fires_ml": float(((tight_scores["probability"] > FIRES) & eroded).sum()) * VOXEL_ML,
            "fires_ml_inside_tight": float((fires & eroded).sum()) * VOXEL_ML,
            "tight_flagged_ml": flagged(tight_scores["score"], threshold, clean_up)[0]}


def strong_n4_experiment(scorer: AnomalyScorer, name: str, spec: PreprocessingSpec, work: Path, tag: str,
                         threshold: float, clean_up: CleanUp) -> dict:
    """ŷ > 0.5 ml and flagged ml of scan ``name`` preprocessed with a stronger N4 (:data:`STRONG_N4`)."""
    strong_spec = replace(spec, bias_field=replace(spec.bias_field, **STRONG_N4))
    case = model_space(f"{name}~strongN4", work, strong_spec, lambda: native(name))
    scores = scored(scorer, case, work, tag)
    fires = (scores["probability"] > FIRES) & scores["mask"].astype(bool)
    return {"strongN4_fires_ml": float(fires.sum()) * VOXEL_ML,
            "strongN4_flagged_ml": flagged(scores["score"], threshold, clean_up)[0]}


# ---------------------------------------------------------------- report

def fmt(value, digits: int = 2) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], columns: list[tuple[str, str, int]]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key), digits) for key, _, digits in columns) + " |")
    return "\n".join(lines)


def run_fold(fold: str, setup: dict, args: argparse.Namespace, result: dict, publish_partial) -> None:
    """Measure one fold into ``result`` in phases, most informative first; ``publish_partial()`` after each
    phase, so an interrupted run still reports what it measured (the phases reached are named)."""
    bundle = load_bundle(Path(setup["model"]))
    spec = PreprocessingSpec.from_dict(bundle.description.get("preprocessing", {}))
    if tuple(spec.grid.spacing) != (VOXEL_MM,) * 3:
        raise SystemExit(f"{setup['model']}: model grid spacing {spec.grid.spacing} mm; this benchmark measures "
                         f"on {VOXEL_MM:g} mm voxels")
    threshold, preset = resolve_threshold(bundle, None)
    clean_up = CleanUp.from_scoring(bundle.description.get("scoring", {}))
    scorer = AnomalyScorer.from_bundle(bundle, device="cpu")
    template = template_on_grid(spec)
    work = args.work / fold
    check_cache_model(work, {part: bundle.component(part).sha256 for part in sorted(bundle.components)})
    LOG.info("fold %s: model %s, threshold %.4f (%s)", fold, setup["model"], threshold, preset)
    result.update({"bundle": bundle, "threshold": threshold, "preset": preset, "model": setup["model"],
                   "precision": precision_name(scorer.reconstructor.autocast_dtype),
                   "clean_up": asdict(clean_up),
                   "held_out": list(setup["held_out"]), "roles": held_out_roles(bundle, list(setup["held_out"])),
                   "training": training_record(bundle),
                   "tumour": [], "tumour_diagnosis": [], "healthy": [], "synthetic": [],
                   "diagnosis": [], "experiments": [], "phases_done": [], "cached_only": CACHED_ONLY})

    def healthy_case(name: str, thickness: float | None = None) -> tuple[Case, dict, object]:
        make = (lambda n=name: native(n)) if thickness is None else reacquired(name, thickness)
        key = name if thickness is None else f"{name}@{thickness}mm"
        case = model_space(key, work, spec, make)
        return case, scored(scorer, case, work, fold), make

    def tumour(name: str, value: int, thickness: float | None) -> None:
        make = (lambda: native(name, value)) if thickness is None else reacquired(name, thickness, value)
        case = model_space(name if thickness is None else f"{name}@{thickness}mm", work, spec, make)
        scores = scored(scorer, case, work, fold)
        result["tumour"].append(labelled_row(case, scores, threshold, clean_up))
        if not args.skip_diagnosis:
            result["tumour_diagnosis"].append(tumour_diagnosis_row(scorer, case, scores))
        LOG.info("%s", result["tumour"][-1])

    def phase(name: str) -> None:
        result["phases_done"].append(name)
        result["in_progress"] = None
        publish_partial()

    def partial(name: str) -> None:  # a long phase reports after every case
        result["in_progress"] = name
        publish_partial()

    # 1. held-out healthy scans as they are + the diagnosis of where the SegUnet fires
    for name in setup["held_out"]:
        try:
            case, scores, make = healthy_case(name)
        except NotCached:
            continue
        result["healthy"].append(healthy_row(case, scores, threshold, clean_up))
        if not args.skip_diagnosis:
            result["diagnosis"].append(diagnosis_row(case, scores, template))
            result["experiments"].append(cheap_experiments(scorer, case, scores))
        LOG.info("%s", result["healthy"][-1])
    phase("healthy scans as they are, diagnosis")
    # 2. the tumours as they are
    for name, value in TUMOURS.items():
        try:
            tumour(name, value, None)
        except NotCached:
            continue
    phase("tumours as they are")
    # 3. synthetic lesions in the held-out scans
    for host_index, name in enumerate(setup["held_out"]):
        try:
            host, _, _ = healthy_case(name)
        except NotCached:
            continue
        for count, name_of, insert, seed in ((args.lesions_per_host, lesion_name, insert_lesion, LESION_SEED),
                                             (args.tumours_per_host, tumour_name, insert_tumour, TUMOUR_SEED)):
            for index in range(count):
                if CACHED_ONLY and not (work / "scores" / fold / f"{name_of(name, index)}.npz").is_file():
                    continue
                lesion = insert(host, index, seed + 101 * host_index + index)
                if lesion.labels.sum() < 20:
                    LOG.warning("%s: lesion too small after clipping, skipped", lesion.name)
                    continue
                try:
                    lesion_scores = scored(scorer, lesion, work, fold)
                except NotCached:
                    continue
                result["synthetic"].append(labelled_row(lesion, lesion_scores, threshold, clean_up))
                LOG.info("%s", result["synthetic"][-1])
                partial("synthetic lesions")
    phase("synthetic lesions")
    # 4. re-acquired: tumours at 5 and 6.5 mm, healthy scans at 6.5 mm
    for name, value in TUMOURS.items():
        for thickness in REACQUIRED_MM:
            try:
                tumour(name, value, thickness)
            except NotCached:
                continue
            partial("re-acquired tumours and healthy scans")
    for name in setup["held_out"]:
        try:
            case, scores, _ = healthy_case(name, HEALTHY_REACQUIRED_MM)
        except NotCached:
            continue
        result["healthy"].append(healthy_row(case, scores, threshold, clean_up))
        LOG.info("%s", result["healthy"][-1])
        partial("re-acquired tumours and healthy scans")
    phase("re-acquired tumours and healthy scans")
    # 5. the tighter mask and the stronger bias-field removal (one more scoring / preprocessing per scan)
    if not args.skip_diagnosis:
        for row in result["experiments"]:
            try:
                case, scores, _ = healthy_case(row["case"])
                row.update(tight_mask_experiment(scorer, case, scores, work, fold, threshold, clean_up))
            except NotCached:
                continue
            partial("tighter mask, strong N4")
        for row in result["experiments"]:
            try:
                row.update(strong_n4_experiment(scorer, row["case"], spec, work, fold, threshold,
                                                       clean_up))
            except NotCached:
                continue
            partial("tighter mask, strong N4")
        phase("tighter mask, strong N4")


def main(argv: list[str] | None = None) -> int:
    global CACHED_ONLY
    args = parse_args(argv)
    CACHED_ONLY = args.cached_only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    load, started = machine(), time.perf_counter()
    results: dict[str, dict] = {}

    def publish_partial() -> None:
        elapsed = time.perf_counter() - started
        document = {fold: {k: v for k, v in r.items() if k != "bundle"} for fold, r in results.items()}
        args.work.mkdir(parents=True, exist_ok=True)
        (args.work / "results.json").write_text(json.dumps(document, indent=2, default=float) + "\n",
                                                 encoding="utf-8")
        publish(SECTION, report(load, elapsed), write=not args.no_write)
        for fold, result in results.items():
            if "bundle" in result:
                publish(fold_section_name(fold), fold_section(fold, result), write=not args.no_write, after=SECTION)

    for fold, setup in load_folds(args.folds).items():
        results[fold] = {}
        run_fold(fold, setup, args, results[fold], publish_partial)
    return 0


def fold_section_name(fold: str) -> str:
    """The BENCHMARKS.md section of one fold: each fold keeps its own, so a run of some folds leaves the
    others' numbers in place."""
    return f"{SECTION}-fold-{fold}"


def report(load: str, elapsed_s: float) -> str:
    """The BENCHMARKS.md section that explains the folds' sections (they follow it, one per fold)."""
    return "\n".join([
        "## Generalization to unseen scans (`benchmarks/generalization.py`, issue #13)",
        "",
        f"Last run {datetime.date.today().isoformat()} on {load}; {elapsed_s / 60:.0f} min (preprocessing and "
        "scores cached afterwards); each fold below states when it was measured. "
        "Command: `nice -n 10 .venv/bin/python benchmarks/generalization.py [--folds FOLDS.json]`. "
        "Model grid (2 mm), flagged and Dice@op = the bundle's operating point (`val` threshold and clean-up, "
        "as `segment` applies them); "
        "findings = 26-connected components on the model grid. Re-acquired = the documented clinical "
        "re-acquisition (`AnomalySegLib/augmentation/acquisition.py`: axial slabs with a slice profile, in-plane "
        "0.8–1 mm, Rician noise 3 %, another bias field), labels carried through the same geometry. Baseline "
        "= ⌈Dice⌉ of intensity alone inside the brain: bright = x − median, dark = median − x, |x − median|.",
    ])


def fold_section(fold: str, result: dict) -> str:
    name = result["bundle"].description.get("name", fold)
    labelled_columns = [("case", "case", 0), ("true_ml", "true ml", 1), ("best_dice", "⌈Dice⌉", 2),
                        ("auprc", "AUPRC", 2), ("dice_op", "Dice@op", 2), ("flagged_ml", "flagged ml", 1),
                        ("findings", "findings", 0), ("baseline_bright", "baseline bright ⌈Dice⌉", 2),
                        ("baseline_dark", "baseline dark ⌈Dice⌉", 2), ("baseline_abs", "baseline \\|x−m\\| ⌈Dice⌉", 2)]
    healthy_columns = [("case", "case", 0), ("flagged_ml", "flagged ml", 1), ("findings", "findings", 0),
                       ("empty", "% of mask not scanned", 0),
                       ("csf", "% CSF-like", 0), ("gm", "% GM-like", 0), ("wm", "% WM-like", 0),
                       ("rim<4", "% rim <4 mm", 0), ("rim4-10", "% 4–10 mm", 0), ("rim>10", "% >10 mm", 0),
                       ("inferior", "% inferior", 0), ("middle", "% mid z", 0), ("superior", "% superior", 0),
                       ("anterior", "% anterior", 0), ("central", "% central y", 0), ("posterior", "% posterior", 0)]
    diagnosis_columns = [("case", "case", 0), ("fires_ml", "ŷ>0.5 ml", 1), ("intensity_ratio", "x fires / rest", 3),
                         ("residual_fires", "x−x̂ fires", 3), ("residual_rest", "x−x̂ rest", 3),
                         ("abs_residual_fires", "\\|x−x̂\\| fires", 3), ("abs_residual_rest", "\\|x−x̂\\| rest", 3),
                         ("rim_mm_fires", "rim mm fires (median)", 0), ("rim_mm_rest", "rim mm rest", 0),
                         ("wm_bias_cv", "WM bias CV", 3), ("wm_local_ratio_fires", "local WM level at fires", 3),
                         ("template_ncc_fires", "local corr. with template, fires", 2),
                         ("template_ncc_rest", "… rest", 2),
                         ("registration_metric", "registration MI", 3), ("mask_source", "mask", 0)]
    experiment_columns = [("case", "case", 0), ("fires_ml", "ŷ>0.5 ml", 1), ("flagged_ml", "flagged ml", 1),
                          ("fires_ml_inside_tight", "ŷ>0.5 ml inside mask−4 mm", 1),
                          ("tight_fires_ml", "…with mask−4 mm", 1), ("tight_flagged_ml", "flagged, mask−4 mm", 1),
                          ("strongN4_fires_ml", "ŷ>0.5 ml, strong N4", 1),
                          ("strongN4_flagged_ml", "flagged, strong N4", 1),
                          ("no_residual_fires_ml", "ŷ>0.5 ml, x̂ := x", 1),
                          ("no_residual_overlap", "Dice(ŷ>0.5, same with x̂ := x)", 2)]
    tumour_diagnosis_columns = [("case", "case", 0), ("tumour_probability", "ŷ in the tumour (mean)", 2),
                                ("tumour_fires_pct", "% of the tumour ŷ>0.5", 0),
                                ("tumour_residual", "x−x̂ in the tumour", 3),
                                ("away_fires_ml", f"ŷ>0.5 ml >{AWAY_FROM_TUMOUR_MM:g} mm away", 1),
                                ("away_residual", "x−x̂ there", 3), ("away_intensity", "x there", 2),
                                ("away_rim_pct", f"% of it <{RIM_BANDS_MM[0]:g} mm from the mask edge", 0),
                                ("away_bright_pct", f"% of it ≥ p{BRIGHT_PERCENTILE:g} of normal brain", 0),
                                ("brightest_fires_pct", f"% of normal brain ≥ p{BRIGHTEST_PERCENTILE:g} with ŷ>0.5", 0),
                                ("probability_best_dice", "⌈Dice⌉ of ŷ", 2),
                                ("no_residual_best_dice", "⌈Dice⌉ of ŷ, x̂ := x", 2)]
    synthetic = result["synthetic"]
    mean = lambda key, rows: float(np.mean([r[key] for r in rows])) if rows else math.nan  # noqa: E731
    std = lambda key, rows: float(np.std([r[key] for r in rows])) if rows else math.nan  # noqa: E731
    groups = []
    for label, selector in (("all", lambda r: True), ("bright", lambda r: "_bright_" in r["case"]),
                            ("dark", lambda r: "_dark_" in r["case"]), ("grey matter", lambda r: r["case"].count("_gm_")),
                            ("white matter", lambda r: "_wm_" in r["case"]), ("blob", lambda r: "+blob" in r["case"]),
                            ("DRAEM", lambda r: "+draem" in r["case"]),
                            ("tumour-like", lambda r: "+tumour" in r["case"])):
        rows = [r for r in synthetic if selector(r)]
        groups.append({"case": f"{label} (n={len(rows)})",
                       "best_dice": f"{mean('best_dice', rows):.2f} ± {std('best_dice', rows):.2f}" if rows else "–",
                       "dice_op": mean("dice_op", rows), "baseline_bright": mean("baseline_bright", rows),
                       "baseline_dark": mean("baseline_dark", rows), "baseline_abs": mean("baseline_abs", rows)})
    group_columns = [("case", "lesions", 0), ("best_dice", "⌈Dice⌉ mean ± std", 2), ("dice_op", "Dice@op", 2),
                     ("baseline_bright", "baseline bright", 2), ("baseline_dark", "baseline dark", 2),
                     ("baseline_abs", "baseline \\|x−m\\|", 2)]
    role_words = {"calibration": "chose the operating point, never trained on", "test": "took part in no choice",
                  "not recorded": "its role is not recorded in the bundle"}
    roles = result.get("roles", {})
    held_out = ", ".join(f"{scan} ({role_words[roles[scan]]})" if scan in roles else scan
                         for scan in result["held_out"])
    trained = training_words(result.get("training", {}))
    bundled = Path(result["model"]).resolve() == default_model_path().resolve()
    which = "the bundled default model" if bundled else "trained for this fold by the default model's recipe"
    parts = [f"### Fold `{fold}`: model `{name}` ({which}), held-out scans {', '.join(result['held_out'])}",
             "", f"Held out: {held_out}.{trained} Measured {datetime.date.today().isoformat()}. Scored at {result['precision']} (`auto` on this machine). Threshold {result['threshold']:.4f} "
             f"({result['preset']}), clean-up "
             + ", ".join(f"{key} {value:g}" for key, value in result["clean_up"].items()) + ". Phases measured: "
             f"{'; '.join(result['phases_done']) or 'none yet'}"
             + (f"; still running when this was written: {result['in_progress']} (partial)"
                if result.get("in_progress") else "") + "."
             + (" Rebuilt with `--cached-only` from the cases an interrupted run had finished: a case the run "
                "had not reached is a missing row, not a zero." if result.get("cached_only") else ""), "",
             "**Tumours** (MRBrainTumor1/2 as they are and re-acquired):", "",
             markdown(result["tumour"], labelled_columns), "",
             *(["**What the tumour answer rests on** (ŷ = the SegUnet's probability, before the clean-up; x̂ := x = "
                "the SegUnet given the image as its reconstruction, so no residual):", "",
                markdown(result["tumour_diagnosis"], tumour_diagnosis_columns), ""]
               if result.get("tumour_diagnosis") else []),
             "**Held-out healthy scans** (native and re-acquired at 6.5 mm; where the flagged voxels sit, % of them):", "",
             markdown(result["healthy"], healthy_columns), "",
             "**Synthetic 3D lesions in the held-out scans** (summary; per lesion below):", "",
             markdown(groups, group_columns), "", markdown(synthetic, labelled_columns)]
    if result["diagnosis"]:
        parts += ["", "**Where the SegUnet fires (ŷ > 0.5) on the held-out healthy scans**, against the rest of "
                  "the brain:", "", markdown(result["diagnosis"], diagnosis_columns), "",
                  "**What changes it** (ŷ > 0.5 ml and flagged ml; mask−4 mm = the brain mask eroded by 4 mm and "
                  "the image zeroed outside it; strong N4 = shrink 2, 4 levels, convergence 1e-4; x̂ := x = the "
                  "SegUnet given the image as its reconstruction):", "",
                  markdown(result["experiments"], experiment_columns)]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
