"""Seeded random draws on a tensor's device, shared by the anomaly generators.

All draws go through an optional :class:`torch.Generator`; numbers are drawn on the generator's device
(so a CPU generator gives the same anomalies whether the images live on the CPU or a GPU) and moved
to the images' device.
"""

from __future__ import annotations

import torch


def generator_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    """The device random numbers are drawn on: the generator's, else ``fallback``."""
    return generator.device if generator is not None else fallback


def uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """``shape`` float32 samples of U[low, high) on ``device``."""
    draw = torch.rand(shape, generator=generator, device=generator_device(generator, device))
    return (low + (high - low) * draw).to(device)


def integers(
    shape: tuple[int, ...],
    low: int,
    high: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """``shape`` int64 samples of U{low, ..., high} (both ends included) on ``device``."""
    draw = torch.randint(low, high + 1, shape, generator=generator, device=generator_device(generator, device))
    return draw.to(device)
