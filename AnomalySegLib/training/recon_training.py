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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from AnomalySegLib.bundle import ModelBundle
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
from AnomalySegLib.errors import InputError
from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase, load_case_folder, recorded_preprocessing
from AnomalySegLib.spec_io import SpecError, check_keys
from AnomalySegLib.training.augment import AugmentationSpec, SliceAugmenter
from AnomalySegLib.training.case_splits import split_cases
from AnomalySegLib.distributed import DistributedContext, init_distributed
from AnomalySegLib.training.loop import TrainingOutcome
from AnomalySegLib.training.scaffold import build_trainer, provenance, train_and_save, training_folders
from AnomalySegLib.training.spec import TrainingSpec
from AnomalySegLib.training.slices import SliceBatch, SliceSampler

LOG = logging.getLogger(__name__)
VALIDATION_SEED = 1234
#: Top-level keys of a Stage I configuration (``name`` and ``description`` are for people).
CONFIG_KEYS = ("name", "description", "model", "noise_levels", "training")


@dataclass(frozen=True)
class ReconTrainingSpec(TrainingSpec):
    """The ``"training"`` section of a Stage I configuration (see the module docstring)."""

    max_steps: int = 50_000
    augmentation: AugmentationSpec | None = AugmentationSpec()


def parse_config(config: dict) -> tuple[ReconSpec, ReconTrainingSpec, tuple[int, ...]]:
    """Model spec, training settings and test noise levels of a configuration dict.

    Raises:
        InputError: a section is missing or invalid (the message names it).
    """
    where = config.get("name", "<config>")
    try:
        check_keys(config, CONFIG_KEYS, "Stage I configuration key")
        spec = ReconSpec.from_dict(config["model"])
        settings = ReconTrainingSpec.from_dict(config.get("training", {}))
        levels = tuple(int(t) for t in config.get("noise_levels", DEFAULT_NOISE_LEVELS))
    except SpecError as error:
        raise InputError(where, f"invalid Stage I configuration: {error}") from error
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
        self.batch: SliceBatch = sampler.evenly_spaced(max_slices)
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
    initial_weights: dict[str, torch.Tensor] | None = None,
) -> tuple[ModelBundle, TrainingOutcome]:
    """Train a Stage I model on healthy ``cases``; returns the (unsaved) bundle and the outcome.

    Args:
        work_dir: checkpoints and logs; with ``resume`` the run continues from its checkpoint.
        context: a distributed context (default: :func:`init_distributed` from ``torchrun``'s variables).
        preprocessing: the preprocessing spec to record in the bundle.
        initial_weights: start from these weights (a Stage I state dict of the same architecture).
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

    trainer = build_trainer(
        lambda: build_network(spec), settings, context, work_dir,
        batch_fn=batch_fn, loss_fn=ReconObjective(spec, context.device), validate_fn=validate_fn,
        resume=resume, progress=progress, identity={"task": "train-recon", "model": spec.to_dict()},
        initial_weights=initial_weights,
    )
    outcome = trainer.fit()
    bundle = ModelBundle(
        description={
            "noise_levels": list(noise_levels),
            "preprocessing": preprocessing or {},
            "grid": list(cases[0].image.shape),
            "metrics": {"stage1_validation": outcome.validation},
            "provenance": {
                "stage1": provenance(
                    config, outcome, context,
                    training_cases=[case.case_id for case in train_cases],
                    validation_cases=[case.case_id for case in validation_cases],
                )
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
    out, work_dir = training_folders(out, work_dir, overwrite=overwrite, resume=resume)
    parse_config(config)  # fail before loading data
    cases = load_case_folder(data, need_labels=False)
    preprocessing = recorded_preprocessing(Path(data) / cases[0].case_id)

    def train(context: DistributedContext) -> ModelBundle:
        return train_recon(cases, config, work_dir, resume=resume, progress=progress, context=context,
                           preprocessing=preprocessing)[0]

    return train_and_save(train, out, overwrite=overwrite, device=device)
