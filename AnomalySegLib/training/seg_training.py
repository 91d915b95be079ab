"""Stage II training (``anomalyseg train-seg``): the SegUnet on top of a frozen Stage I model.

Each step draws a batch of axial slices: a ``synthetic_fraction`` of them healthy slices given DRAEM
anomalies, the rest labelled slices (e.g. preprocessed BraTS/ATLAS cases). Stage I reconstructs every
slice — from the possibly anomalous input, at a noise level ``t`` drawn per slice from
``timestep_range`` — and the SegUnet learns the anomaly mask from (x − x̂, x) with BCE (plus an
optional Dice term). Validation runs on held-out cases at the test noise levels, exactly as at
inference (ŷ averaged over the levels). The loop itself (checkpoints and exact resume, EMA, DDP under
``torchrun``, AMP, progress, TensorBoard) is :class:`AnomalySegLib.training.loop.Trainer`.

A configuration (``AnomalySegLib/configs/seg_*.json``)::

    {"model": <SegUnetConfig>, "anomalies": <DraemAnomalyGenerator settings>,
     "lesions": {"fraction": <share of synthetic slices>, <LesionAnomalyGenerator settings>} (optional),
     "scoring": <ScoringConfig>,
     "training": {"batch_size", "learning_rate", "optimizer": "adam"|"adamw", "weight_decay", "max_steps",
                  "ema_decay", "grad_clip", "precision", "checkpoint_every", "validate_every", "log_every",
                  "seed", "min_brain_fraction", "dice_weight", "synthetic_fraction", "timestep_range",
                  "validation_cases", "validation_fraction", "validation_max_slices", "augmentation"}}
"""

from __future__ import annotations

import datetime
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

import AnomalySegLib
from AnomalySegLib.anomalies import (AnomalyGenerator, AnomalyMixture, DraemAnomalyGenerator,
                                     LesionAnomalyGenerator)
from AnomalySegLib.bundle import ModelBundle, load_bundle, save_bundle
from AnomalySegLib.device import describe
from AnomalySegLib.diffusion.reconstruction import Reconstructor, load_reconstructor
from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.metrics import best_dice, dice
from AnomalySegLib.networks.seg_unet import SegUnet, SegUnetConfig
from AnomalySegLib.preprocessing.case_folder import LABELS_FILE, ModelSpaceCase, list_cases, load_case
from AnomalySegLib.scoring.anomaly_score import ScoringConfig
from AnomalySegLib.scoring.volume import SCORING_SECTION, SEG_COMPONENT
from AnomalySegLib.training.augment import SliceAugmenter
from AnomalySegLib.training.checkpoint import CHECKPOINT_FILE
from AnomalySegLib.distributed import DistributedContext, init_distributed, shutdown
from AnomalySegLib.training.loop import Trainer, TrainingOutcome
from AnomalySegLib.training.recon_training import split_cases
from AnomalySegLib.training.settings import TrainingSettings
from AnomalySegLib.training.slices import SliceSampler

LOG = logging.getLogger(__name__)
VALIDATION_SEED = 4321


@dataclass(frozen=True)
class SegTrainingSettings(TrainingSettings):
    """The ``"training"`` section of a Stage II configuration (see the module docstring).

    Attributes:
        dice_weight: weight of a soft Dice loss added to BCE (paper: 0, BCE only).
        synthetic_fraction: share of each batch made of healthy slices with synthetic anomalies when
            both healthy and labelled data are given (1 with healthy data only, 0 with labels only).
        timestep_range: Stage I noise levels ``[low, high)`` drawn per slice (paper code: [0, T)).
        validation_cases: healthy cases held out for validation (with seeded synthetic anomalies).
        validation_fraction: share of labelled cases held out (at least one when there are two or more).
        validation_max_slices: validation slices per source (spread evenly over the held-out cases).
    """

    optimizer: str = "adam"
    log_every: int = 10
    dice_weight: float = 0.0
    synthetic_fraction: float = 1.0
    timestep_range: tuple[int, int] = (0, 1000)
    validation_fraction: float = 0.1

    @classmethod
    def _converted(cls, values: dict) -> dict:
        if "timestep_range" in values:
            values["timestep_range"] = tuple(int(t) for t in values["timestep_range"])
        return values

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.synthetic_fraction <= 1.0:
            raise ValueError(f"synthetic_fraction must be in [0, 1], got {self.synthetic_fraction}")
        low, high = self.timestep_range
        if not 0 <= low < high:
            raise ValueError(f"timestep_range must be [low, high) with 0 <= low < high, got {self.timestep_range}")


@dataclass(frozen=True)
class SegTrainingConfig:
    """A parsed Stage II configuration."""

    network: SegUnetConfig
    training: SegTrainingSettings
    anomalies: AnomalyGenerator
    scoring: ScoringConfig


def _tuples(settings: dict) -> dict:
    """JSON lists → tuples (the generators' ranges are tuples)."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}


def anomaly_generator(config: dict) -> AnomalyGenerator:
    """DRAEM anomalies (``"anomalies"``), mixed with lesion-like blobs when ``"lesions"`` is given.

    ``"lesions": {"fraction": f, ...}`` gives a share ``f`` of the synthetic slices a
    :class:`LesionAnomalyGenerator` blob instead of a DRAEM texture (the other keys are its settings).
    """
    draem = DraemAnomalyGenerator(**_tuples(config.get("anomalies", {})))
    if "lesions" not in config:
        return draem
    lesions = _tuples(config["lesions"])
    fraction = float(lesions.pop("fraction"))
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"lesions.fraction must be in [0, 1], got {fraction}")
    return AnomalyMixture((draem, LesionAnomalyGenerator(**lesions)), (1.0 - fraction, fraction))


def parse_seg_config(config: dict) -> SegTrainingConfig:
    """Parse a configuration dict; :class:`InputError` naming the config and the problem."""
    where = config.get("name", "<config>")
    try:
        return SegTrainingConfig(
            network=SegUnetConfig.from_dict(config["model"]),
            training=SegTrainingSettings.from_dict(config.get("training", {})),
            anomalies=anomaly_generator(config),
            scoring=ScoringConfig.from_dict(config.get("scoring", {})),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(where, f"invalid Stage II configuration ({error!r})") from error


@dataclass
class SegBatch:
    """One training batch: inputs x, reconstructions x̂ and targets, all ``[B, 1, H, W]``."""

    images: torch.Tensor
    reconstructions: torch.Tensor
    labels: torch.Tensor


class SegBatchSource:
    """``batch_fn(step, generator)`` for :class:`Trainer`: slices, anomalies, Stage I reconstructions.

    Args:
        healthy: sampler over healthy cases (synthetic anomalies), or ``None``.
        labelled: sampler over labelled cases, or ``None``.
        synthetic_count: how many of the ``batch_size`` slices come from ``healthy``.
    """

    def __init__(
        self,
        reconstructor: Reconstructor,
        healthy: SliceSampler | None,
        labelled: SliceSampler | None,
        anomalies: AnomalyGenerator,
        settings: SegTrainingSettings,
        synthetic_count: int,
    ) -> None:
        self.reconstructor = reconstructor
        self.healthy, self.labelled = healthy, labelled
        self.anomalies = anomalies
        self.settings = settings
        self.synthetic_count = synthetic_count
        self.augmenter = SliceAugmenter(settings.augmentation) if settings.augmentation else None

    def __call__(self, step: int, generator: torch.Generator) -> SegBatch:
        images, labels = [], []
        if self.synthetic_count:
            healthy = self.healthy.sample(self.synthetic_count, generator)
            clean = self._augment(healthy.images, generator)
            synthetic = self.anomalies(clean, healthy.masks, generator)
            images.append(synthetic.images)
            labels.append(synthetic.masks)
        labelled_count = self.settings.batch_size - self.synthetic_count
        if labelled_count:
            labelled = self.labelled.sample(labelled_count, generator)
            images.append(self._augment(labelled.images, generator))
            labels.append(labelled.labels)
        images_t, labels_t = torch.cat(images), torch.cat(labels)
        low, high = self.settings.timestep_range
        timesteps = torch.randint(low, high, (images_t.shape[0],), generator=generator)
        reconstructions = self.reconstructor.predict_x0(images_t, timesteps, generator)
        device = self.reconstructor.device
        return SegBatch(images_t.to(device), reconstructions, labels_t.to(device))

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.augmenter(images, generator) if self.augmenter else images


class SegObjective:
    """``loss_fn(model, batch, generator)``: BCE with logits (+ ``dice_weight`` × soft Dice)."""

    def __init__(self, dice_weight: float = 0.0) -> None:
        self.dice_weight = dice_weight
        self.dice_loss = DiceLoss(sigmoid=True, batch=True) if dice_weight else None

    def __call__(self, model: nn.Module, batch: SegBatch, generator: torch.Generator) -> torch.Tensor:
        logits = model(batch.images, batch.reconstructions).float()
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        if self.dice_loss is not None:
            loss = loss + self.dice_weight * self.dice_loss(logits, batch.labels)
        return loss


class SegValidation:
    """``validate_fn(model)``: BCE, Dice at ŷ > 0.5 and ⌈Dice⌉ of ŷ over fixed held-out slices.

    The slices, their synthetic anomalies and their Stage I reconstructions at the test noise levels
    are computed once (Stage I is frozen); each validation is then only SegUnet passes.
    """

    def __init__(
        self,
        reconstructor: Reconstructor,
        healthy: SliceSampler | None,
        labelled: SliceSampler | None,
        anomalies: AnomalyGenerator,
        max_slices: int,
        chunk: int = 32,
    ) -> None:
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        images, labels = [], []
        if healthy is not None:
            batch = _spread(healthy, max_slices)
            synthetic = anomalies(batch.images, batch.masks, generator)
            images.append(synthetic.images)
            labels.append(synthetic.masks)
        if labelled is not None:
            batch = _spread(labelled, max_slices)
            images.append(batch.images)
            labels.append(batch.labels)
        self.images = torch.cat(images)
        self.labels = torch.cat(labels)
        self.device = reconstructor.device
        self.chunk = chunk
        per_level = [
            reconstructor.reconstruct(part, generator=generator).per_level for part in self.images.split(chunk)
        ]
        self.reconstructions = torch.cat(per_level, dim=1).cpu()  # [L, N, 1, H, W]

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        probabilities = torch.zeros_like(self.images)
        logits_sum = torch.zeros_like(self.images)
        for level in self.reconstructions:
            for start in range(0, self.images.shape[0], self.chunk):
                part = slice(start, start + self.chunk)
                logits = model(self.images[part].to(self.device), level[part].to(self.device)).float().cpu()
                logits_sum[part] += logits
                probabilities[part] += torch.sigmoid(logits)
        levels = self.reconstructions.shape[0]
        probabilities /= levels
        bce = F.binary_cross_entropy_with_logits(logits_sum / levels, self.labels)
        truth = self.labels.numpy() > 0.5
        return {
            "bce": float(bce),
            "dice_at_0.5": dice(probabilities.numpy() > 0.5, truth),
            "best_dice": best_dice(probabilities.numpy(), truth)[0],
        }


def _spread(sampler: SliceSampler, count: int):
    """Up to ``count`` eligible slices spread evenly over the sampler's cases."""
    chosen = torch.linspace(0, len(sampler) - 1, min(count, len(sampler))).round().long()
    return sampler.take(sampler.eligible[chosen])


def split_labelled(
    cases: Sequence[ModelSpaceCase], fraction: float
) -> tuple[list[ModelSpaceCase], list[ModelSpaceCase]]:
    """Labelled cases for training and validation: the last ``max(1, round(fraction·n))`` by id held out
    (none when there is a single case)."""
    ordered = sorted(cases, key=lambda case: case.case_id)
    count = max(1, round(fraction * len(ordered))) if len(ordered) > 1 and fraction > 0 else 0
    return ordered[: len(ordered) - count], ordered[len(ordered) - count :]


def synthetic_share(settings: SegTrainingSettings, has_healthy: bool, has_labelled: bool) -> int:
    """Slices per batch drawn from healthy data with synthetic anomalies."""
    if has_healthy and not has_labelled:
        return settings.batch_size
    if has_labelled and not has_healthy:
        return 0
    return int(round(settings.synthetic_fraction * settings.batch_size))


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
) -> tuple[ModelBundle, TrainingOutcome]:
    """Train a SegUnet on top of ``recon_bundle``'s Stage I; returns the (unsaved) SADM bundle.

    Args:
        healthy_cases: healthy volumes for synthetic anomalies (may be empty when labelled cases are given).
        labelled_cases: volumes with ``labels`` (may be empty when healthy cases are given).
        work_dir: checkpoints and logs; with ``resume`` the run continues from its checkpoint.
        context: distributed context (default: from ``torchrun``'s variables).

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

    torch.manual_seed(settings.seed)  # identical initial weights in every process and run
    network = SegUnet(parsed.network)
    optimizer_class = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    trainer = Trainer(
        network,
        lambda parameters: optimizer_class(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay),
        settings.loop_settings(progress),
        context,
        work_dir,
        batch_fn=batch_fn,
        loss_fn=SegObjective(settings.dice_weight),
        validate_fn=validate_fn,
        resume=resume,
    )
    outcome = trainer.fit()

    bundle = recon_bundle.derive()
    if SEG_COMPONENT in bundle.components:
        LOG.warning("the Stage I bundle has a 'seg' component already; replacing it")
    bundle.add_component(SEG_COMPONENT, parsed.network.to_dict(), outcome.ema_model.state_dict(), replace=True)
    bundle.description[SCORING_SECTION] = parsed.scoring.to_dict()  # thresholds come from 'calibrate'
    bundle.description.setdefault("metrics", {})["stage2_validation"] = outcome.validation
    bundle.description.setdefault("provenance", {})["stage2"] = {
        "software": f"AnomalySeg {AnomalySegLib.__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "stage1_bundle": str(recon_bundle.path) if recon_bundle.path else None,
        "healthy_training_cases": [case.case_id for case in healthy_train],
        "healthy_validation_cases": [case.case_id for case in healthy_val],
        "labelled_training_cases": [case.case_id for case in labelled_train],
        "labelled_validation_cases": [case.case_id for case in labelled_val],
        "synthetic_slices_per_batch": synthetic_count,
        "steps": outcome.step,
        "processes": context.world_size,
        "device": describe(context.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    return bundle, outcome


def load_case_folder(root: str | Path, need_labels: bool) -> list[ModelSpaceCase]:
    """Every preprocessed case under ``root``; with ``need_labels`` each must have ``labels.nii.gz``."""
    cases = []
    for folder in list_cases(root):
        case = load_case(folder)
        if need_labels and case.labels is None:
            raise InputError(
                folder, f"has no {LABELS_FILE}; preprocess labelled cases with 'anomalyseg preprocess --labels'"
            )
        if need_labels and not np.any(case.labels):
            LOG.warning("%s: labels are empty (a healthy case among the labelled ones)", folder)
        cases.append(case)
    return cases


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
    out = Path(out)
    work_dir = Path(work_dir) if work_dir else out.with_name(out.name + ".training")
    if out.exists() and not overwrite:
        raise OutputExistsError(out)
    if (work_dir / CHECKPOINT_FILE).exists() and not resume:
        raise InputError(work_dir, "holds the checkpoint of an earlier run: pass --resume to continue it, "
                         "or remove the folder to start afresh")
    if healthy is None and labels is None:
        raise InputError(None, "give --healthy (synthetic anomalies), --labels (labelled cases), or both")
    parse_seg_config(config)  # fail before loading data
    recon_bundle = load_bundle(recon)
    healthy_cases = load_case_folder(healthy, need_labels=False) if healthy is not None else []
    labelled_cases = load_case_folder(labels, need_labels=True) if labels is not None else []
    context = init_distributed(device)
    try:
        bundle, _ = train_seg(
            recon_bundle, healthy_cases, labelled_cases, config, work_dir,
            resume=resume, progress=progress, context=context,
        )
        if not context.is_main:
            return None
        return save_bundle(bundle, out, overwrite=overwrite)
    finally:
        shutdown(context)
