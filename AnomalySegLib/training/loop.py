"""The generic training loop shared by Stage I (``train-recon``) and Stage II (``train-seg``).

A task plugs in three functions and the loop does the rest — optimizer steps with AMP on GPU, gradient
clipping, EMA of the weights, DDP under ``torchrun``, a progress bar, TensorBoard and JSON-lines logs,
periodic validation, and checkpoints from which an interrupted run resumes exactly::

    batch_fn(step, generator) -> batch             # draw this step's (augmented) training batch
    loss_fn(model, batch, generator) -> loss       # scalar tensor to minimise
    validate_fn(model) -> {"name": value, ...}     # on the EMA weights, rank 0 only

``generator`` is a CPU ``torch.Generator`` seeded from ``(seed, step, rank)``; tasks draw all their
randomness from it so that a resumed run repeats the uninterrupted one draw for draw.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from AnomalySegLib.device import autocast, autocast_dtype
from AnomalySegLib.errors import InputError
from AnomalySegLib.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint, step_generator
from AnomalySegLib.distributed import (
    DistributedContext,
    barrier,
    mean_across_processes,
    unwrap_model,
    wrap_model,
)
from AnomalySegLib.training.ema import make_ema

LOG = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

BatchFn = Callable[[int, torch.Generator], Any]
LossFn = Callable[[nn.Module, Any, torch.Generator], torch.Tensor]
ValidateFn = Callable[[nn.Module], dict[str, float]]


@dataclass
class LoopSpec:
    """How long and how to train.

    Attributes:
        max_steps: optimizer steps in total (a resumed run continues up to it).
        precision: autocast on the training device, see :mod:`AnomalySegLib.device` (``auto``: bf16/fp16
            on CUDA, fp32 elsewhere).
        grad_clip: max global gradient norm (``None``: no clipping).
        ema_decay: decay of the weights' moving average.
        checkpoint_every, validate_every, log_every: in steps (validation also runs at the end).
        seed: seeds every random draw of the run.
        progress: show a progress bar (rank 0).
        select_best: a key of ``validate_fn``'s result; when given, the outcome's (EMA) model carries the
            weights of the validation with the lowest value (ties: the earlier one), not the last.
    """

    max_steps: int
    precision: str = "auto"
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    validate_every: int = 500
    log_every: int = 10
    seed: int = 0
    progress: bool = True
    select_best: str | None = None


@dataclass
class TrainingOutcome:
    """What a finished run gives back: the EMA model, the last step and the logged history."""

    ema_model: nn.Module
    model: nn.Module
    step: int
    validation: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Runs ``settings.max_steps`` optimizer steps of one task (see the module docstring).

    Args:
        model: the network to train (moved to the context's device, DDP-wrapped when distributed).
        optimizer_factory: builds the optimizer from the model's parameters.
        work_dir: checkpoint and logs go here (rank 0 writes).
        resume: continue from ``work_dir``'s checkpoint (which must exist).
        identity: what is being trained (e.g. the model spec), JSON-serialisable; stored in the
            checkpoint, and resuming a checkpoint of something else is refused.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer_factory: Callable[[Any], torch.optim.Optimizer],
        settings: LoopSpec,
        context: DistributedContext,
        work_dir: str | Path,
        batch_fn: BatchFn,
        loss_fn: LossFn,
        validate_fn: ValidateFn | None = None,
        resume: bool = False,
        identity: dict | None = None,
    ) -> None:
        self.settings = settings
        self.context = context
        self.work_dir = Path(work_dir)
        self.batch_fn, self.loss_fn, self.validate_fn = batch_fn, loss_fn, validate_fn
        self.model = wrap_model(model, context)
        self.optimizer = optimizer_factory(self.model.parameters())
        self.ema = make_ema(unwrap_model(self.model), settings.ema_decay)
        self.autocast_dtype = autocast_dtype(context.device, settings.precision)
        use_scaler = self.autocast_dtype == torch.float16 and context.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.validation: dict[str, float] = {}
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (value, step, EMA weights)
        self.identity = json.dumps(identity, sort_keys=True) if identity is not None else ""
        if resume:
            self._restore(load_checkpoint(self.work_dir / CHECKPOINT_FILE, context.device))

    def fit(self) -> TrainingOutcome:
        """Train to ``max_steps``; on ``KeyboardInterrupt`` save a checkpoint, then re-raise."""
        writer = self._tensorboard()
        progress = tqdm(
            total=self.settings.max_steps,
            initial=self.step,
            disable=not (self.settings.progress and self.context.is_main),
            desc="training",
            unit="step",
            dynamic_ncols=True,
        )
        losses: list[float] = []
        try:
            while self.step < self.settings.max_steps:
                losses.append(self._train_step())
                self.step += 1
                progress.update(1)
                if self.step % self.settings.log_every == 0 or self.step == self.settings.max_steps:
                    loss = mean_across_processes(sum(losses) / len(losses), self.context)
                    losses.clear()
                    progress.set_postfix(loss=f"{loss:.4f}")
                    self._log({"train/loss": loss, "train/lr": self.optimizer.param_groups[0]["lr"]}, writer)
                if self.validate_fn is not None and (
                    self.step % self.settings.validate_every == 0 or self.step == self.settings.max_steps
                ):
                    self._validate(writer)
                if self.step % self.settings.checkpoint_every == 0 or self.step == self.settings.max_steps:
                    self.save()
        except KeyboardInterrupt:
            LOG.warning("interrupted at step %d; saving a checkpoint to resume from", self.step)
            self.save()
            raise
        finally:
            progress.close()
            if writer is not None:
                writer.close()
        if self.best is not None:
            value, step, weights = self.best
            LOG.info("keeping the weights of step %d (validation %s %.5f)", step, self.settings.select_best, value)
            self.ema.load_state_dict(weights)
        return TrainingOutcome(
            ema_model=self.ema.module,
            model=unwrap_model(self.model),
            step=self.step,
            validation=dict(self.validation),
            history=list(self.history),
        )

    def save(self) -> None:
        """Write the checkpoint (rank 0) and wait for all processes."""
        if self.context.is_main:
            save_checkpoint(
                self.work_dir / CHECKPOINT_FILE,
                {
                    "step": self.step,
                    "model": unwrap_model(self.model).state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "ema": self.ema.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "history": json.dumps(self.history),
                    "validation": json.dumps(self.validation),
                    "identity": self.identity,
                    **({} if self.best is None else
                       {"best_value": self.best[0], "best_step": self.best[1], "best_ema": self.best[2]}),
                },
            )
        barrier(self.context)

    def _train_step(self) -> float:
        generator = step_generator(self.settings.seed, self.step, self.context.rank)
        batch = self.batch_fn(self.step, generator)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.context.device, self.autocast_dtype):
            loss = self.loss_fn(self.model, batch, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.step}")
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update_parameters(unwrap_model(self.model))
        return float(loss.detach())

    def _validate(self, writer) -> None:
        if self.context.is_main:
            self.validation = {key: float(value) for key, value in self.validate_fn(self.ema.module).items()}
            self._log({f"val/{key}": value for key, value in self.validation.items()}, writer)
            self._keep_if_best()
        barrier(self.context)

    def _keep_if_best(self) -> None:
        """Remember the EMA weights when ``select_best``'s metric reaches a new low."""
        name = self.settings.select_best
        if name is None:
            return
        if name not in self.validation:
            raise KeyError(f"select_best {name!r} is not a validation metric ({', '.join(self.validation)})")
        value = self.validation[name]
        if self.best is None or value < self.best[0]:
            weights = {key: tensor.detach().clone() for key, tensor in self.ema.state_dict().items()}
            self.best = (value, self.step, weights)

    def _log(self, values: dict[str, float], writer) -> None:
        if not self.context.is_main:
            return
        record = {"step": self.step, **{k: v for k, v in values.items() if math.isfinite(v)}}
        self.history.append(record)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / METRICS_FILE, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, self.step)
        LOG.debug("step %d: %s", self.step, values)

    def _tensorboard(self):
        if not self.context.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            LOG.warning("tensorboard is not installed: logging to %s only", self.work_dir / METRICS_FILE)
            return None
        return SummaryWriter(log_dir=str(self.work_dir / TENSORBOARD_DIR), purge_step=self.step or None)

    def _restore(self, state: dict[str, Any]) -> None:
        if self.identity and state.get("identity", self.identity) != self.identity:
            raise InputError(
                self.work_dir / CHECKPOINT_FILE,
                "was written by a run with another model or configuration; resume with the same "
                "configuration, or use another work folder",
            )
        unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = json.loads(state.get("history", "[]"))
        self.validation = json.loads(state.get("validation", "{}"))
        if "best_ema" in state:
            self.best = (float(state["best_value"]), int(state["best_step"]), state["best_ema"])
        if self.step > self.settings.max_steps:
            LOG.warning("checkpoint is at step %d, beyond max_steps %d", self.step, self.settings.max_steps)
