"""The ``"training"`` section of a configuration: what every training task shares.

Stage I and Stage II subclass :class:`TrainingSpec` with their own defaults and extra fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from AnomalySegLib.training.augment import AugmentationSpec
from AnomalySegLib.spec_io import JsonSpec
from AnomalySegLib.training.loop import LoopSpec

OPTIMIZERS = ("adamw", "adam")


@dataclass(frozen=True)
class TrainingSpec(JsonSpec):
    """Optimisation, loop and data-sampling settings of a training run.

    Attributes:
        batch_size: slices per step (per process under ``torchrun``).
        learning_rate, optimizer, weight_decay: AdamW/Adam settings.
        max_steps: optimisation steps of the run.
        ema_decay: decay of the exponential moving average of the weights (the saved model).
        grad_clip: gradient-norm clipping (``None``: off).
        precision: ``auto``/``fp32``/``bf16``/``fp16`` autocast (see :mod:`AnomalySegLib.device`).
        checkpoint_every, validate_every, log_every: in steps.
        seed: seeds initial weights and every random draw (with the step and rank).
        min_brain_fraction: slices with less brain than this share of pixels are not sampled.
        validation_cases: (healthy) cases held out for validation.
        validation_max_slices: validation slices per source.
        augmentation: intensity/artefact augmentation (``None``: off).
        select_best: a validation metric (e.g. ``"loss"``, ``"bce"``): the saved model is the one with
            its lowest value over the run's validations, as the authors' checkpoint callback keeps
            (``None``: the final weights).
    """

    SPEC_NAME = "training section"

    batch_size: int = 32
    learning_rate: float = 1e-4
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    max_steps: int = 20_000
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    precision: str = "auto"
    checkpoint_every: int = 1000
    validate_every: int = 1000
    log_every: int = 20
    seed: int = 0
    min_brain_fraction: float = 0.05
    validation_cases: int = 1
    validation_max_slices: int = 64
    augmentation: AugmentationSpec | None = None
    select_best: str | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")

    def loop_settings(self, progress: bool) -> LoopSpec:
        return LoopSpec(
            max_steps=self.max_steps,
            precision=self.precision,
            grad_clip=self.grad_clip,
            ema_decay=self.ema_decay,
            checkpoint_every=self.checkpoint_every,
            validate_every=self.validate_every,
            log_every=self.log_every,
            seed=self.seed,
            progress=progress,
            select_best=self.select_best,
        )
