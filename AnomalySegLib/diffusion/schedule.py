"""The forward diffusion schedule, kept apart from the network (as diffusers and MONAI do).

We use MONAI's scheduler for the betas / cumulative alphas (``"cosine"`` is Nichol & Dhariwal's schedule,
``"linear_beta"`` Ho et al.'s). Departure from MONAI: ``Scheduler.add_noise`` moves and casts its
``alphas_cumprod`` buffer in place on every call; we keep our own float32 copy per device instead, so
that noising under autocast never loses precision and the scheduler object is never mutated.
Iterative sampling (``DDPMScheduler.step``) is not needed: the method reconstructs in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.schedulers import DDPMScheduler

from AnomalySegLib.spec_io import JsonSpec

SCHEDULE_NAMES = {"cosine": "cosine", "linear": "linear_beta"}


@dataclass(frozen=True)
class ScheduleSpec(JsonSpec):
    """Which schedule (stored in the model bundle). ``name``: ``"cosine"`` or ``"linear"``."""

    SPEC_NAME = "diffusion schedule spec"

    name: str = "cosine"
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.name not in SCHEDULE_NAMES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULE_NAMES)}, not {self.name!r}")


class NoiseSchedule:
    """``x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·noise`` for integer timesteps ``t`` in ``[0, T)``."""

    def __init__(self, spec: ScheduleSpec = ScheduleSpec()) -> None:
        self.spec = spec
        scheduler = DDPMScheduler(
            num_train_timesteps=spec.num_train_timesteps,
            schedule=SCHEDULE_NAMES[spec.name],
            prediction_type="sample",
        )
        self._alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32)
        self._on_device: dict[torch.device, torch.Tensor] = {}

    @property
    def num_timesteps(self) -> int:
        return self.spec.num_train_timesteps

    def alphas_cumprod(self, device: torch.device) -> torch.Tensor:
        """ᾱ_t for all t, ``[T]`` float32 on ``device``."""
        if device not in self._on_device:
            self._on_device[device] = self._alphas_cumprod.to(device)
        return self._on_device[device]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Corrupt ``x0`` ``[B, C, H, W]`` with ``noise`` (same shape) at ``timesteps`` ``[B]`` (long)."""
        if timesteps.ndim != 1 or timesteps.shape[0] != x0.shape[0]:
            raise ValueError(f"timesteps must be [B={x0.shape[0]}], got {tuple(timesteps.shape)}")
        if int(timesteps.min()) < 0 or int(timesteps.max()) >= self.num_timesteps:
            raise ValueError(f"timesteps must lie in [0, {self.num_timesteps}), got {timesteps.tolist()}")
        alpha_bar = self.alphas_cumprod(x0.device)[timesteps.to(x0.device)].view(-1, *([1] * (x0.ndim - 1)))
        return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``t ~ U{0, …, T−1}`` per sample, ``[batch]`` long on the CPU."""
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator)
