"""Stage II training (``anomalyseg train-seg``): the SegUnet on top of a frozen Stage I model.

Each step draws a batch of axial slices (:mod:`.seg_batches`): a ``synthetic_fraction`` of them healthy
slices given DRAEM anomalies, the rest labelled slices (e.g. preprocessed BraTS/ATLAS cases). Stage I
reconstructs every slice — from the possibly anomalous input, at a noise level ``t`` drawn per slice from
``timestep_range`` — and the SegUnet learns the anomaly mask from (x − x̂, x) with BCE (plus an optional
Dice term, :mod:`.seg_objective`). Validation (:mod:`.seg_validation`) runs on held-out cases at the test
noise levels, exactly as at inference (ŷ averaged over the levels). The loop itself (checkpoints and
exact resume, EMA, DDP under ``torchrun``, AMP, progress, TensorBoard) is
:class:`AnomalySegLib.training.loop.Trainer`; the configuration is :mod:`.seg_config`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from AnomalySegLib.bundle import ModelBundle, load_bundle
from AnomalySegLib.diffusion.reconstruction import load_reconstructor
from AnomalySegLib.errors import InputError
from AnomalySegLib.networks.seg_unet import SegUnet
from AnomalySegLib.preprocessing.case_folder import LABELS_FILE, ModelSpaceCase, load_case_folder
from AnomalySegLib.scoring.volume import SCORING_SECTION, SEG_COMPONENT
from AnomalySegLib.training.case_splits import split_cases, split_labelled
from AnomalySegLib.distributed import DistributedContext, init_distributed
from AnomalySegLib.training.loop import TrainingOutcome
from AnomalySegLib.training.scaffold import build_trainer, provenance, train_and_save, training_folders
from AnomalySegLib.training.seg_batches import SegBatchSource, synthetic_share
from AnomalySegLib.training.seg_config import parse_seg_config
from AnomalySegLib.training.seg_objective import SegObjective
from AnomalySegLib.training.seg_validation import SegValidation
from AnomalySegLib.training.slices import SliceSampler

LOG = logging.getLogger(__name__)


def train_seg(
    recon_bundle: ModelBundle,
    healthy_cases: Sequence[ModelSpaceCase],
    labelled_cases: Sequence[ModelSpaceCase],
    config: dict,
    work_dir: str | Path,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    context: DistributedContext | None = None,
    initial_weights: dict[str, torch.Tensor] | None = None,
) -> tuple[ModelBundle, TrainingOutcome]:
    """Train a SegUnet on top of ``recon_bundle``'s Stage I; returns the (unsaved) SADM bundle.

    Args:
        healthy_cases: healthy volumes for synthetic anomalies (may be empty when labelled cases are given).
        labelled_cases: volumes with ``labels`` (may be empty when healthy cases are given).
        work_dir: checkpoints and logs; with ``resume`` the run continues from its checkpoint.
        context: distributed context (default: from ``torchrun``'s variables).
        initial_weights: start from these weights (a SegUnet state dict of the same architecture).

    Raises:
        InputError: no data, a labelled case without labels, or a timestep range outside Stage I's schedule.
    """
    parsed = parse_seg_config(config)
    settings = parsed.training
    where = config.get("name", "<config>")
    for case in labelled_cases:
        if case.labels is None:
            raise InputError(case.case_id, f"has no {LABELS_FILE}: labelled training cases need ground truth")
    if not healthy_cases and not labelled_cases:
        raise InputError(None, "Stage II training needs healthy cases, labelled cases, or both")
    context = context or init_distributed(device)
    reconstructor = load_reconstructor(recon_bundle, context.device, settings.precision)
    horizon = reconstructor.spec.schedule.num_train_timesteps
    if settings.timestep_range[1] > horizon:
        raise InputError(where, f"timestep_range {settings.timestep_range} exceeds Stage I's {horizon} steps")

    healthy_train, healthy_val = split_cases(healthy_cases, settings.validation_cases) if healthy_cases else ([], [])
    labelled_train, labelled_val = split_labelled(labelled_cases, settings.validation_fraction)

    def sampler(cases: Sequence[ModelSpaceCase]) -> SliceSampler | None:
        return SliceSampler(cases, settings.min_brain_fraction) if cases else None

    synthetic_count = synthetic_share(settings, bool(healthy_train), bool(labelled_train))
    batch_fn = SegBatchSource(
        reconstructor, sampler(healthy_train), sampler(labelled_train), parsed.anomalies, settings, synthetic_count
    )
    validate_fn = None
    if healthy_val or labelled_val:
        validate_fn = SegValidation(
            reconstructor, sampler(healthy_val), sampler(labelled_val), parsed.anomalies, settings.validation_max_slices
        )

    trainer = build_trainer(
        lambda: SegUnet(parsed.network), settings, context, work_dir,
        batch_fn=batch_fn, loss_fn=SegObjective(settings.dice_weight), validate_fn=validate_fn,
        resume=resume, progress=progress, initial_weights=initial_weights,
    )
    outcome = trainer.fit()

    bundle = recon_bundle.derive()
    if SEG_COMPONENT in bundle.components:
        LOG.warning("the Stage I bundle has a 'seg' component already; replacing it")
    bundle.add_component(SEG_COMPONENT, parsed.network.to_dict(), outcome.ema_model.state_dict(), replace=True)
    bundle.description[SCORING_SECTION] = parsed.scoring.to_dict()  # thresholds come from 'calibrate'
    bundle.description.setdefault("metrics", {})["stage2_validation"] = outcome.validation
    bundle.description.setdefault("provenance", {})["stage2"] = provenance(
        config, outcome, context,
        stage1_bundle=str(recon_bundle.path) if recon_bundle.path else None,
        healthy_training_cases=[case.case_id for case in healthy_train],
        healthy_validation_cases=[case.case_id for case in healthy_val],
        labelled_training_cases=[case.case_id for case in labelled_train],
        labelled_validation_cases=[case.case_id for case in labelled_val],
        synthetic_slices_per_batch=synthetic_count,
    )
    return bundle, outcome


def train_seg_from_folders(
    recon: str | Path,
    healthy: str | Path | None,
    labels: str | Path | None,
    out: str | Path,
    config: dict,
    *,
    work_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> Path | None:
    """``anomalyseg train-seg``: load the Stage I bundle and the case folders, train, save the bundle.

    Returns the bundle folder (rank 0) or ``None`` (other ranks under ``torchrun``).

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        InputError: no data folder given; bad folders; a checkpoint in the work folder without ``resume``.
        ModelBundleError: ``recon`` is not a valid bundle.
    """
    out, work_dir = training_folders(out, work_dir, overwrite=overwrite, resume=resume)
    if healthy is None and labels is None:
        raise InputError(None, "give --healthy (synthetic anomalies), --labels (labelled cases), or both")
    parse_seg_config(config)  # fail before loading data
    recon_bundle = load_bundle(recon)
    healthy_cases = load_case_folder(healthy, need_labels=False) if healthy is not None else []
    labelled_cases = load_case_folder(labels, need_labels=True) if labels is not None else []

    def train(context: DistributedContext) -> ModelBundle:
        return train_seg(recon_bundle, healthy_cases, labelled_cases, config, work_dir,
                         resume=resume, progress=progress, context=context)[0]

    return train_and_save(train, out, overwrite=overwrite, device=device)
