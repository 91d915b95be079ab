"""What every training stage does around its own loss and data: the output/work folder checks, the
seeded network and its optimizer in a :class:`Trainer`, the process group around the run, and the
provenance recorded in the bundle.

Stage I (:mod:`.recon_training`) and Stage II (:mod:`.seg_training`) call these; they differ only in
their data, objective and validation.
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import AnomalySegLib
from AnomalySegLib.bundle import ModelBundle, save_bundle
from AnomalySegLib.device import describe
from AnomalySegLib.errors import InputError, OutputExistsError
from AnomalySegLib.training.checkpoint import CHECKPOINT_FILE
from AnomalySegLib.distributed import DistributedContext, init_distributed, shutdown
from AnomalySegLib.training.loop import BatchFn, LossFn, Trainer, TrainingOutcome, ValidateFn
from AnomalySegLib.training.spec import TrainingSpec


def training_folders(out: str | Path, work_dir: str | Path | None, *, overwrite: bool,
                     resume: bool) -> tuple[Path, Path]:
    """The bundle folder and the work folder (default ``<out>.training``) of a run, checked before
    any data is loaded.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        InputError: the work folder holds a checkpoint and ``resume`` is false.
    """
    out = Path(out)
    work_dir = Path(work_dir) if work_dir else out.with_name(out.name + ".training")
    if out.exists() and not overwrite:
        raise OutputExistsError(out)
    if (work_dir / CHECKPOINT_FILE).exists() and not resume:
        raise InputError(work_dir, "holds the checkpoint of an earlier run: pass --resume to continue it, "
                         "or remove the folder to start afresh")
    return out, work_dir


def build_trainer(
    build_network: Callable[[], nn.Module],
    settings: TrainingSpec,
    context: DistributedContext,
    work_dir: str | Path,
    *,
    batch_fn: BatchFn,
    loss_fn: LossFn,
    validate_fn: ValidateFn | None,
    resume: bool,
    progress: bool,
    identity: dict | None = None,
    initial_weights: dict[str, torch.Tensor] | None = None,
) -> Trainer:
    """A :class:`Trainer` for the network ``build_network()`` makes, with the settings' optimizer.

    The network is built right after seeding torch with ``settings.seed``, so its initial weights are
    the same in every process and every run; ``initial_weights`` (a state dict of the same architecture,
    e.g. an earlier model's) replace them (fine-tuning). A resumed run continues from its checkpoint.
    """
    torch.manual_seed(settings.seed)
    network = build_network()
    if initial_weights is not None:
        network.load_state_dict(initial_weights)
    optimizer_class = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    return Trainer(
        network,
        lambda parameters: optimizer_class(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay),
        settings.loop_settings(progress),
        context,
        work_dir,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        validate_fn=validate_fn,
        resume=resume,
        identity=identity,
    )


def provenance(config: dict, outcome: TrainingOutcome, context: DistributedContext, **cases: Any) -> dict:
    """How a stage was trained, for the bundle's ``"provenance"`` section: software, time (UTC),
    configuration, the case lists given as ``cases``, steps, processes, device, torch and Python."""
    return {
        "software": f"AnomalySeg {AnomalySegLib.__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        **cases,
        "steps": outcome.step,
        "processes": context.world_size,
        "device": describe(context.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def train_and_save(train: Callable[[DistributedContext], ModelBundle], out: Path, *, overwrite: bool,
                   device: str) -> Path | None:
    """Run ``train(context)`` in a process group (``torchrun`` or a single process) and save its bundle.

    Returns the bundle folder on the main process, ``None`` on the others.
    """
    context = init_distributed(device)
    try:
        bundle = train(context)
        if not context.is_main:
            return None
        return save_bundle(bundle, out, overwrite=overwrite)
    finally:
        shutdown(context)
