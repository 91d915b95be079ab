"""Stage I training (``anomalyseg train-recon``): a cDDPM, DDPM or pDDPM on healthy slices.

Each step: random healthy slices (augmented), ``t ~ U{0..T−1}`` per slice, noise (simplex by default),
the network predicts x0 directly, L1 loss (pDDPM: only a random patch is noised, loss on the patch).
Validation reconstructs held-out healthy volumes at the test noise levels and reports the L1 error in
the brain. The EMA weights go into a model bundle with the architecture, noise levels, preprocessing
spec, training provenance and validation metrics.

A configuration (``AnomalySegLib/configs/recon_*.json``)::

    {"model": <ReconSpec.to_dict()>, "noise_levels": [250, 500, 750],
     "training": {"batch_size", "learning_rate", "optimizer": "adamw"|"adam", "weight_decay",
                  "max_steps", "ema_decay", "grad_clip", "precision", "checkpoint_every",
                  "validate_every", "log_every", "seed", "min_brain_fraction",
                  "validation_cases", "validation_max_slices", "augmentation": {...} | null}}
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import AnomalySegLib
from AnomalySegLib.bundle import ModelBundle, save_bundle
from AnomalySegLib.device import describe
from AnomalySegLib.diffusion.noise import sample_noise
from AnomalySegLib.diffusion.reconstruction import (
    DEFAULT_NOISE_LEVELS,
    RECON_COMPONENT,
    Reconstructor,
    build_network,
    corrupt,
    patch_mask,
    to_model_scale,
)
from AnomalySegLib.diffusion.schedule import NoiseSchedule
from AnomalySegLib.diffusion.spec import ReconSpec
from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.preprocessing.case_folder import INFO_FILE, ModelSpaceCase, list_cases, load_case
from AnomalySegLib.training.augment import AugmentationSpec, SliceAugmenter
from AnomalySegLib.training.checkpoint import CHECKPOINT_FILE
from AnomalySegLib.distributed import DistributedContext, init_distributed, shutdown
from AnomalySegLib.training.loop import Trainer, TrainingOutcome
from AnomalySegLib.training.settings import TrainingSettings
from AnomalySegLib.training.slices import SliceBatch, SliceSampler

LOG = logging.getLogger(__name__)
VALIDATION_SEED = 1234


@dataclass(frozen=True)
class ReconTrainingSettings(TrainingSettings):
    """The ``"training"`` section of a Stage I configuration (see the module docstring)."""

    max_steps: int = 50_000
    augmentation: AugmentationSpec | None = AugmentationSpec()


def parse_config(config: dict) -> tuple[ReconSpec, ReconTrainingSettings, tuple[int, ...]]:
    """Model spec, training settings and test noise levels of a configuration dict.

    Raises:
        InputError: a section is missing or invalid (the message names it).
    """
    where = config.get("name", "<config>")
    try:
        spec = ReconSpec.from_dict(config["model"])
        settings = ReconTrainingSettings.from_dict(config.get("training", {}))
        levels = tuple(int(t) for t in config.get("noise_levels", DEFAULT_NOISE_LEVELS))
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(where, f"invalid Stage I configuration ({error!r})") from error
    if not levels or any(not 0 <= t < spec.schedule.num_train_timesteps for t in levels):
        raise InputError(where, f"noise_levels {levels} must lie in [0, {spec.schedule.num_train_timesteps})")
    return spec, settings, levels


class ReconObjective:
    """The Stage I loss: ``loss_fn(model, batch, generator)`` for :class:`Trainer`."""

    def __init__(self, spec: ReconSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.schedule = NoiseSchedule(spec.schedule)

    def __call__(self, model: nn.Module, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """L1 between the predicted and the clean slice (``images`` ``[B, 1, H, W]`` in [0, 1])."""
        x0 = to_model_scale(images.to(self.device), self.spec.image_size)
        batch = x0.shape[0]
        timesteps = self.schedule.sample_timesteps(batch, generator).to(self.device)
        noise = sample_noise(self.spec.noise, tuple(x0.shape), generator, self.device)
        region = None
        if self.spec.patch is not None:
            side = min(self.spec.patch.size, *x0.shape[-2:])
            highest = torch.tensor([x0.shape[-2] - side, x0.shape[-1] - side])
            origins = (torch.rand((batch, 2), generator=generator) * (highest + 1)).long()
            region = patch_mask(tuple(x0.shape), origins, side, self.device)
        x_t = corrupt(self.schedule, x0, noise, timesteps, region)
        condition = x0 if self.spec.denoiser.conditioned else None
        prediction = model(x_t, timesteps, condition).float()
        error = (prediction - x0).abs()
        if region is None:
            return error.mean()
        return (error * region).sum() / region.sum()


class ReconValidation:
    """``validate_fn`` on held-out healthy slices: the training loss (fixed draws) and the
    reconstruction error in the brain at the test noise levels (mean and per level)."""

    def __init__(
        self, spec: ReconSpec, sampler: SliceSampler, noise_levels: Sequence[int], device: torch.device,
        max_slices: int,
    ) -> None:
        self.spec = spec
        self.noise_levels = tuple(noise_levels)
        self.device = device
        chosen = torch.linspace(0, len(sampler) - 1, min(max_slices, len(sampler))).round().long()
        self.batch: SliceBatch = sampler.take(sampler.eligible[chosen])
        self.objective = ReconObjective(spec, device)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        loss = self.objective(model, self.batch.images, torch.Generator().manual_seed(VALIDATION_SEED))
        reconstructor = Reconstructor(self.spec, model, self.device, precision="fp32", noise_levels=self.noise_levels)
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        result = reconstructor.reconstruct(self.batch.images, generator=generator)
        masks = self.batch.masks.to(result.mean.device)
        images = self.batch.images.to(result.mean.device)
        error = ((result.mean - images).abs() * masks).sum() / masks.sum()
        metrics = {"loss": float(loss), "recon_l1_brain": float(error)}
        for level, prediction in zip(result.noise_levels, result.per_level, strict=True):
            metrics[f"recon_l1_brain_t{level}"] = float(((prediction - images).abs() * masks).sum() / masks.sum())
        return metrics


def split_cases(
    cases: Sequence[ModelSpaceCase], validation_cases: int
) -> tuple[list[ModelSpaceCase], list[ModelSpaceCase]]:
    """Held-out validation cases: the last ``validation_cases`` by case id (none if that leaves < 1)."""
    ordered = sorted(cases, key=lambda case: case.case_id)
    count = validation_cases if len(ordered) > validation_cases else 0
    return ordered[: len(ordered) - count], ordered[len(ordered) - count :]


def train_recon(
    cases: Sequence[ModelSpaceCase],
    config: dict,
    work_dir: str | Path,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    context: DistributedContext | None = None,
    preprocessing: dict | None = None,
) -> tuple[ModelBundle, TrainingOutcome]:
    """Train a Stage I model on healthy ``cases``; returns the (unsaved) bundle and the outcome.

    Args:
        work_dir: checkpoints and logs; with ``resume`` the run continues from its checkpoint.
        context: a distributed context (default: :func:`init_distributed` from ``torchrun``'s variables).
        preprocessing: the preprocessing spec to record in the bundle.
    """
    spec, settings, noise_levels = parse_config(config)
    context = context or init_distributed(device)
    train_cases, validation_cases = split_cases(cases, settings.validation_cases)
    sampler = SliceSampler(train_cases, settings.min_brain_fraction)
    augmenter = SliceAugmenter(settings.augmentation) if settings.augmentation else None

    def batch_fn(step: int, generator: torch.Generator) -> torch.Tensor:
        images = sampler.sample(settings.batch_size, generator).images
        return augmenter(images, generator) if augmenter else images

    validate_fn = None
    if validation_cases:
        validation_sampler = SliceSampler(validation_cases, settings.min_brain_fraction)
        validate_fn = ReconValidation(
            spec, validation_sampler, noise_levels, context.device, settings.validation_max_slices
        )

    torch.manual_seed(settings.seed)  # identical initial weights in every process and run
    network = build_network(spec)
    optimizer_class = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    trainer = Trainer(
        network,
        lambda parameters: optimizer_class(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay),
        settings.loop_settings(progress),
        context,
        work_dir,
        batch_fn=batch_fn,
        loss_fn=ReconObjective(spec, context.device),
        validate_fn=validate_fn,
        resume=resume,
        identity={"task": "train-recon", "model": spec.to_dict()},
    )
    outcome = trainer.fit()
    bundle = ModelBundle(
        description={
            "noise_levels": list(noise_levels),
            "preprocessing": preprocessing or {},
            "grid": list(cases[0].image.shape),
            "metrics": {"stage1_validation": outcome.validation},
            "provenance": {
                "stage1": {
                    "software": f"AnomalySeg {AnomalySegLib.__version__}",
                    "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "config": config,
                    "training_cases": [case.case_id for case in train_cases],
                    "validation_cases": [case.case_id for case in validation_cases],
                    "steps": outcome.step,
                    "processes": context.world_size,
                    "device": describe(context.device),
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                }
            },
        }
    )
    bundle.add_component(RECON_COMPONENT, spec.to_dict(), outcome.ema_model.state_dict())
    return bundle, outcome


def train_recon_from_folder(
    data: str | Path,
    out: str | Path,
    config: dict,
    *,
    work_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> Path | None:
    """``anomalyseg train-recon``: train on a folder of preprocessed healthy cases, save the bundle.

    Returns the bundle folder (rank 0) or ``None`` (other ranks under ``torchrun``).

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        InputError: no cases; or the work folder holds a checkpoint and ``resume`` is false.
    """
    out = Path(out)
    work_dir = Path(work_dir) if work_dir else out.with_name(out.name + ".training")
    if out.exists() and not overwrite:
        raise OutputExistsError(out)
    if (work_dir / CHECKPOINT_FILE).exists() and not resume:
        raise InputError(work_dir, "holds the checkpoint of an earlier run: pass --resume to continue it, "
                         "or remove the folder to start afresh")
    parse_config(config)  # fail before loading data
    folders = list_cases(data)
    cases = [load_case(folder) for folder in folders]
    context = init_distributed(device)
    try:
        bundle, _ = train_recon(
            cases, config, work_dir, resume=resume, progress=progress, context=context,
            preprocessing=_preprocessing_spec(folders[0]),
        )
        if not context.is_main:
            return None
        return save_bundle(bundle, out, overwrite=overwrite)
    finally:
        shutdown(context)


def _preprocessing_spec(case_folder: Path) -> dict:
    """The preprocessing spec recorded by ``anomalyseg preprocess`` for a case (``{}`` if none)."""
    info_path = case_folder / INFO_FILE
    if not info_path.is_file():
        return {}
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(info_path, f"is not valid JSON ({error})") from error
    return info.get("spec", info) if isinstance(info, dict) else {}
