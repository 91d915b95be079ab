#!/usr/bin/env python
"""Train the bundled default model (``Resources/Models/default``) from the variant bank of the healthy T1
volumes that the package registries provide (docs/design.md, "Test and training data"), within a wall-clock
budget, on CPU or GPU.

Recipe (every step uses the engine's own functions; nothing here is specific to one machine):

1. the variant bank (``scripts/build_variant_bank.py`` on the whole-brain grid): every healthy source as
   it is and re-acquired (slice thickness, resolution, noise, bias field, contrast, geometry), passed
   through the real preprocessing; MRBrainTumor1/2 are never in it;
2. the sources are split by subject: the training sources train the networks; :data:`CALIBRATION_SOURCES`
   (never trained on) choose β, the validation threshold and, afterwards, the operating point
   (``scripts/calibrate_default_model.py``); :data:`TEST_SOURCES` are kept out of every choice so that
   benchmarks can report the model on an unseen subject;
3. Stage I: the ``recon_cpu`` cDDPM on the first :data:`STAGE1_VARIANTS` variants of each training source,
   with the paper's augmentation made stronger;
4. Stage II: the ``seg_cpu`` SegUnet on every variant of the training sources, so that part of its
   residuals come from acquisitions Stage I never saw (as at test time); synthetic anomalies are DRAEM
   textures, lesion-like blobs (a share :data:`LESION_FRACTION`) and tumour-like anomalies (enhancing
   rim, darker core, oedema, mass effect; a share :data:`TUMOUR_FRACTION`); the weights kept are those of
   the validation with the lowest BCE on the held-out calibration scan with the same kinds of anomalies
   (every :data:`STAGE2_VALIDATE_EVERY` steps); the brain-mask edge of a share
   :data:`MASK_EROSION_P` of the slices is moved inward (the cut edge is no cue);
5. calibration on the calibration source's variants with the same seeded synthetic anomalies: β (among
   :data:`BETA_CANDIDATES`) and the "val" threshold; the false-positive-rate presets on its variants;
6. the bundle, fp16 weights, ``description["name"] = "anomalyseg-default-t1"``; the split is recorded in
   ``provenance.default_model`` (read by the calibration script and the benchmarks).

``--init-from BUNDLE`` starts both networks from an earlier model of the same architectures (fine-tuning: far
fewer steps on a CPU); the earlier model must not have seen the calibration or test sources.

Budget: each stage trains in chunks; the seconds per step are measured on the first chunk and every
later chunk is sized to fit the time left, so a stage ends within its budget on any machine (Stage I
keeps the last chunk's EMA weights, Stage II those of its best validation); ``--recon-max-steps`` /
``--seg-max-steps`` also stop a stage at a step count, to reproduce a run by steps. ``--resume`` continues
an interrupted run from the stages' checkpoints (the time already spent counts against the budget). The
wall time of every stage (a stage's training summed over the processes of a resumed run) is printed and
stored in ``<work>/summary.json`` and in the bundle's provenance.

Usage::

    python scripts/build_variant_bank.py --variants 8                                     # once, ~10 min
    python scripts/train_default_model.py --recon-minutes 50 --seg-minutes 25             # CPU
    python scripts/calibrate_default_model.py --cache <work>/operating_point              # the operating point
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from AnomalySegLib.bundle import ModelBundle, load_bundle, save_bundle
from AnomalySegLib.calibration import PORTABLE_PRECISION, apply_calibration, calibrate, describe
from AnomalySegLib.device import autocast_dtype, choose_device, describe as describe_device, precision_name
from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase
from AnomalySegLib.augmentation.variant_bank import (DEFAULT_BANK, RECIPE_GRID, SOURCES, bank_root, load_variants,
                                                     recipe_spec)
from AnomalySegLib.preprocessing.spec import MODEL_GRIDS
from AnomalySegLib.recipe_record import record_update, trained_sources
from AnomalySegLib.scoring.volume import AnomalyScorer
from AnomalySegLib.training.budget import StageBudget
from AnomalySegLib.training.config import load_config
from AnomalySegLib.training.recon_training import train_recon
from AnomalySegLib.training.seg_config import anomaly_generator
from AnomalySegLib.training.seg_training import train_seg

LOG = logging.getLogger("train_default_model")

MODEL_NAME = "anomalyseg-default-t1"
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPOSITORY_ROOT / "Resources" / "Models" / "default"
DEFAULT_WORK = REPOSITORY_ROOT / ".cache" / "default_model"

#: Bank sources (:data:`AnomalySegLib.augmentation.variant_bank.SOURCES`) split by subject: the thresholds
#: are chosen on these, never trained on, pooled over two subjects (one subject's variants chose operating
#: points that did not transfer, BENCHMARKS.md "generalization-diagnosis") ...
CALIBRATION_SOURCES = ("itk_kmeans_t1", "ds000240_t1")
#: ... these are kept out of every choice (reported as unseen by the benchmarks) ...
TEST_SOURCES = ("someones_anatomy",)
#: ... and the networks train on all the others (``--calibration-sources`` / ``--test-sources`` make
#: another split, e.g. a leave-one-source-out fold).
NEVER_TRAIN_ON = ("mrbraintumor1", "mrbraintumor2")
#: Stage I sees these variant numbers of each training source (0: the scan as it is); Stage II sees all,
#: so that the rest are acquisitions Stage I never reconstructed during training.
STAGE1_VARIANTS = range(0, 5)
#: Share of Stage II's healthy slices whose brain-mask edge is moved 1–2 pixels inward.
MASK_EROSION_P = 0.5

#: "Strong" Stage I/II augmentation: the paper's transforms at higher probabilities and wider ranges,
#: because six healthy subjects and three population templates are far from the paper's IXI.
STRONG_AUGMENTATION = {
    "gamma_p": 0.8,
    "gamma_range": [0.6, 1.6],
    "bias_field_p": 0.5,
    "bias_field_coefficients": [-0.6, 0.6],
    "bias_field_degree": 3,
    "blur_p": 0.3,
    "blur_sigma_pixels": [0.25, 1.0],
    "ghosting_p": 0.3,
    "ghosts_range": [4, 10],
    "ghost_intensity_range": [0.5, 1.0],
    "ghost_restore_fraction": 0.02,
}
#: Share of Stage II's synthetic slices given a lesion-like blob instead of a DRAEM texture. DRAEM
#: alone taught the first default model foreign textures only: it did not fire on solid tumours.
LESION_FRACTION = 0.3
#: Share given a tumour-like anomaly (:mod:`AnomalySegLib.anomalies.tumour`). Blobs and textures alone
#: taught the SegUnet to answer real enhancing tumours less the longer it trained (BENCHMARKS.md).
TUMOUR_FRACTION = 0.3
#: Stage II validates this often and keeps the weights of its best validation (lowest BCE).
STAGE2_VALIDATE_EVERY = 250
#: β (weight of the SSIM term in the anomaly score) is chosen among these on the held-out validation
#: volume: the paper's plain sum (0.5) assumes a sharp Stage I, which a CPU-trained one is not.
BETA_CANDIDATES = (0.0, 0.25, 0.5, 0.75, 1.0)
CALIBRATION_DRAWS = 2  # held-out volume copies with different DRAEM anomalies
CALIBRATION_SEED = 2024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle folder (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help="checkpoints and logs (default: %(default)s)")
    parser.add_argument("--bank", type=Path, default=DEFAULT_BANK,
                        help="the variant bank (scripts/build_variant_bank.py; default: %(default)s)")
    parser.add_argument("--grid", choices=sorted(MODEL_GRIDS), default=RECIPE_GRID,
                        help="model grid (default: %(default)s)")
    parser.add_argument("--recon-minutes", type=float, default=30.0, help="Stage I training budget")
    parser.add_argument("--seg-minutes", type=float, default=15.0, help="Stage II training budget")
    parser.add_argument("--recon-max-steps", type=int, default=None,
                        help="also stop Stage I at this step (reproduce a run by steps)")
    parser.add_argument("--seg-max-steps", type=int, default=None,
                        help="also stop Stage II at this step (reproduce a run by steps)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto (default: %(default)s)")
    parser.add_argument("--precision", default="auto",
                        help="training autocast: auto (bf16 where the CPU multiplies bf16 in hardware, ≈2× faster "
                             "there; fp32 where it would emulate bf16, which is many times slower), bf16, fp32 "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="slices per step, both stages (default: %(default)s; more steps in a CPU budget)")
    parser.add_argument("--calibration-sources", nargs="+", choices=sorted(SOURCES), default=list(CALIBRATION_SOURCES),
                        help="bank sources that choose the thresholds (default: %(default)s)")
    parser.add_argument("--test-sources", nargs="+", choices=sorted(SOURCES), default=list(TEST_SOURCES),
                        help="bank sources kept out of every choice (default: %(default)s)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start both networks from this bundle's weights (same architectures; fine-tuning)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --work")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    return parser.parse_args(argv)


def bank_cases(root: Path, sources: tuple[str, ...], indices: range | None = None) -> list[ModelSpaceCase]:
    """Variants of ``sources`` from the bank (``[Z, 96, 96]`` arrays), each sanity-checked."""
    if set(sources) & set(NEVER_TRAIN_ON):
        raise ValueError(f"{sorted(set(sources) & set(NEVER_TRAIN_ON))} are test cases; never in the bank")
    cases = load_variants(root, sources, indices)
    for case in cases:
        check_case(case)
    return cases


def split_sources(calibration: list[str], test: list[str]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``(training, calibration, test)`` sources: training is every bank source in neither held-out group.

    Raises:
        SystemExit: the held-out groups overlap, or nothing is left to train on.
    """
    if set(calibration) & set(test):
        raise SystemExit(f"a source cannot both calibrate and test: {sorted(set(calibration) & set(test))}")
    training = tuple(source for source in SOURCES if source not in calibration and source not in test)
    if not training:
        raise SystemExit("no bank source is left for training")
    return training, tuple(calibration), tuple(test)


def check_never_saw_held_out(bundle: ModelBundle, held_out: tuple[str, ...]) -> None:
    """Refuse to fine-tune from a model that trained on a ``held_out`` source or a test case (or whose
    recipe does not say what it trained on)."""
    seen = trained_sources(bundle.description)
    if seen is None:
        raise SystemExit(f"{bundle.path}: records no training sources; cannot tell whether it saw the held-out ones")
    leaked = sorted(set(seen) & {*held_out, *NEVER_TRAIN_ON})
    if leaked:
        raise SystemExit(f"{bundle.path} was trained on {', '.join(leaked)}, which this recipe holds out")


def check_case(case: ModelSpaceCase) -> None:
    """Log and sanity-check a preprocessed healthy volume (brain size, intensities inside the brain)."""
    brain = case.mask
    fraction = float(brain.mean())
    inside = case.image[brain]
    LOG.info("%-20s brain %.1f %% of the grid, intensity in brain mean %.3f median %.3f",
             case.case_id, 100 * fraction, float(inside.mean()), float(np.median(inside)))
    if not 0.15 < fraction < 0.7 or not 0.2 < float(np.median(inside)) < 0.9:
        raise RuntimeError(f"{case.case_id}: preprocessing looks wrong (brain fraction {fraction:.2f}, "
                           f"median intensity {float(np.median(inside)):.2f}); inspect it before training")


def renamed(case: ModelSpaceCase, case_id: str) -> ModelSpaceCase:
    return ModelSpaceCase(case_id, case.image, case.mask, case.labels)


def last_metrics(work_dir: Path) -> dict:
    """The last logged training loss and validation values of a stage (its ``metrics.jsonl``)."""
    latest: dict = {}
    log_file = work_dir / "metrics.jsonl"
    if log_file.is_file():
        for line in log_file.read_text(encoding="utf-8").splitlines():
            latest.update(json.loads(line))
    return latest


def calibration_cases(held_out: ModelSpaceCase, seg_config: dict) -> list[ModelSpaceCase]:
    """The held-out volume with Stage II's seeded synthetic anomalies (slice-wise, inside the brain),
    ``CALIBRATION_DRAWS`` times."""
    generator = anomaly_generator(seg_config)
    images = torch.from_numpy(held_out.image)[:, None]
    masks = torch.from_numpy(held_out.mask)[:, None]
    cases = []
    for draw in range(CALIBRATION_DRAWS):
        anomalies = generator(images, masks, torch.Generator().manual_seed(CALIBRATION_SEED + draw))
        cases.append(ModelSpaceCase(f"{held_out.case_id}_synthetic{draw}", anomalies.images[:, 0].numpy(),
                                    held_out.mask, anomalies.masks[:, 0].numpy() > 0))
    return cases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    wall: dict[str, float] = {}
    if args.out.exists() and not args.overwrite:
        LOG.error("%s exists; pass --overwrite to replace it", args.out)
        return 2
    if args.work.exists() and not args.resume and any((args.work / d).exists() for d in ("recon", "seg")):
        LOG.error("%s holds an earlier run; pass --resume to continue it or remove it", args.work)
        return 2

    training_sources, calibration_sources, test_sources = split_sources(args.calibration_sources, args.test_sources)
    initial = load_bundle(args.init_from) if args.init_from else None
    if initial is not None:
        check_never_saw_held_out(initial, (*calibration_sources, *test_sources))
    stage_start = time.perf_counter()
    spec = recipe_spec(args.grid)
    preprocessing = spec.to_dict()
    root = bank_root(args.bank, spec)
    LOG.info("variant bank %s", root)
    stage1_cases = bank_cases(root, training_sources, STAGE1_VARIANTS)
    # The trainers hold out the last case by id for validation: the calibration source's scan as it is.
    scan = bank_cases(root, calibration_sources[:1], range(0, 1))[0]
    held_out = renamed(scan, f"zz_validation_{scan.case_id}")
    wall["loading_s"] = time.perf_counter() - stage_start
    LOG.info("Stage I: %d variants", len(stage1_cases))

    recon_config = load_config("recon_cpu")
    recon_config["name"] = "recon_cpu (default model)"
    # A short run: a faster EMA (time constant ~200 steps) and a larger learning rate than recon_cpu's.
    recon_config["training"].update(precision=args.precision, ema_decay=0.995, learning_rate=3e-4,
                                    batch_size=args.batch_size, validation_cases=1, validation_max_slices=32,
                                    augmentation=STRONG_AUGMENTATION,
                                    checkpoint_every=100, validate_every=10**9, log_every=10)

    def train_stage1(max_steps: int, resume: bool):
        recon_config["training"]["max_steps"] = max_steps
        return train_recon([*stage1_cases, held_out], recon_config, args.work / "recon", resume=resume,
                           device=args.device, progress=False, preprocessing=preprocessing,
                           initial_weights=initial.component("recon").state_dict if initial else None)

    recon_bundle_dir = args.work / "recon_bundle"
    recon_budget = StageBudget("Stage I", args.work / "recon", args.recon_minutes * 60,
                               max_steps=args.recon_max_steps)
    if recon_budget.state["done"] and recon_bundle_dir.is_dir():
        recon_bundle = load_bundle(recon_bundle_dir)
    else:
        recon_bundle, _ = recon_budget.run(train_stage1)
        save_bundle(recon_bundle, recon_bundle_dir, overwrite=True)
        recon_budget.mark_done()
    # the training seconds of every process of a resumed run (budget.json), not only this one's
    wall["stage1_s"] = recon_budget.state["seconds"]
    LOG.info("Stage I: %s", last_metrics(args.work / "recon"))

    seg_config = load_config("seg_cpu")
    seg_config["name"] = "seg_cpu (default model)"
    seg_config["lesions"] = {"fraction": LESION_FRACTION}
    seg_config["tumours"] = {"fraction": TUMOUR_FRACTION}
    seg_config["training"].update(precision=args.precision, batch_size=args.batch_size, validation_cases=1,
                                  validation_max_slices=32, augmentation=STRONG_AUGMENTATION,
                                  mask_erosion_p=MASK_EROSION_P, checkpoint_every=100,
                                  validate_every=STAGE2_VALIDATE_EVERY, select_best="bce", log_every=10)

    # Loaded only now: the bank may still have been growing while Stage I trained.
    stage2_cases = bank_cases(root, training_sources)
    LOG.info("Stage II: %d variants", len(stage2_cases))

    def train_stage2(max_steps: int, resume: bool):
        seg_config["training"]["max_steps"] = max_steps
        return train_seg(recon_bundle, [*stage2_cases, held_out], [], seg_config, args.work / "seg", resume=resume,
                         device=args.device, progress=False,
                         initial_weights=initial.component("seg").state_dict if initial else None)

    seg_budget = StageBudget("Stage II", args.work / "seg", args.seg_minutes * 60, max_steps=args.seg_max_steps)
    seg_bundle, seg_outcome = seg_budget.run(train_stage2)
    # the bundle is committed: no path of the training machine in it (the recon weights' checksum names Stage I)
    seg_bundle.description["provenance"]["stage2"]["stage1_bundle"] = f"<work>/{recon_bundle_dir.name}"
    wall["stage2_s"] = seg_budget.state["seconds"]
    LOG.info("Stage II: %s", last_metrics(args.work / "seg"))

    stage_start = time.perf_counter()
    scorer = AnomalyScorer.from_bundle(seg_bundle, device=args.device, precision=PORTABLE_PRECISION)
    calibration_variants = bank_cases(root, calibration_sources)
    result = calibrate(scorer, calibration_cases(held_out, seg_config), calibration_variants,
                       beta_candidates=BETA_CANDIDATES)
    LOG.info("calibration: %s", describe(result))
    bundle = apply_calibration(seg_bundle, result)
    wall["calibration_s"] = time.perf_counter() - stage_start
    wall["this_process_s"] = time.perf_counter() - started

    summary = {
        "name": MODEL_NAME,
        "variant_bank": {"spec_key": root.name, "grid": args.grid},
        "training_sources": list(training_sources),
        "stage1_variants": [STAGE1_VARIANTS.start, STAGE1_VARIANTS.stop],
        "stage1_cases": len(stage1_cases),
        "stage2_cases": len(stage2_cases),
        "calibration_sources": list(calibration_sources),
        "test_sources": list(test_sources),
        "validation_case": held_out.case_id,
        "initialised_from": None if initial is None else {
            "name": initial.name, **{f"{part}_sha256": initial.component(part).sha256 for part in ("recon", "seg")}},
        "batch_size": args.batch_size,
        "device": describe_device(choose_device(args.device)),
        "threads": args.threads,
        "precision": precision_name(autocast_dtype(choose_device(args.device), args.precision)),
        "budget_minutes": {"stage1": args.recon_minutes, "stage2": args.seg_minutes},
        "max_steps": {"stage1": args.recon_max_steps, "stage2": args.seg_max_steps},
        "stage1": {"steps": recon_budget.state["steps"], "last": last_metrics(args.work / "recon")},
        "stage2": {"steps": seg_outcome.step, "last": last_metrics(args.work / "seg")},
        "calibration": result.to_scoring_entries(),
        "wall_time_s": {key: round(value, 1) for key, value in wall.items()},
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    bundle.description["name"] = MODEL_NAME
    bundle.description.setdefault("provenance", {}).update(
        record_update({**summary, "recipe": "scripts/train_default_model.py"}))
    # save_bundle keeps the hand-written MODEL_CARD.md of an existing bundle folder
    save_bundle(bundle, args.out, overwrite=args.overwrite, storage_dtype=torch.float16)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    size = sum(path.stat().st_size for path in args.out.iterdir() if path.is_file())
    LOG.info("bundle %s: %.2f MB; wall time %s", args.out, size / 1e6, summary["wall_time_s"])
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
