"""Training checkpoints: everything needed to resume exactly, written atomically, read without pickle.

A checkpoint holds the model, optimizer, EMA and gradient-scaler states, the step, torch's global RNG
states and the history of logged values. All randomness of our training loops is drawn from
per-step generators seeded from ``(seed, step, rank)`` (:func:`step_generator`), so resuming at a
step reproduces every later draw without carrying generator state; the global RNG states are saved too
for code that uses them. Files are written with ``torch.save`` to a temporary name and renamed, and
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from AnomalySegLib.errors import InputError

CHECKPOINT_FILE = "checkpoint.pt"


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for one training step of one process, independent of all others."""
    state = np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, state dicts, numbers, strings, lists) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(state)
    state["torch_rng"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and restore the global RNG states.

    Raises:
        InputError: the file is missing or is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no training checkpoint to resume from")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise InputError(path, f"is not a readable training checkpoint ({error})") from error
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"].cpu())
    if "cuda_rng" in state and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return state
