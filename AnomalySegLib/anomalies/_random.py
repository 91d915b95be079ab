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


def random_voxels_in_masks(masks: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random voxel of each sample's mask.

    Args:
        masks: ``[B, 1, *spatial]`` bool/0-1.
        generator: seeds the draw.

    Returns:
        ``([B, ndim] float32 voxel indices, [B] bool: the mask is not empty)``; an empty mask gives
        index 0 and ``False``.
    """
    batch, spatial = masks.shape[0], masks.shape[2:]
    inside = masks.reshape(batch, -1) > 0
    # The arg-max of random keys over the mask is a uniformly random voxel of it.
    keys = uniform(tuple(inside.shape), 0.0, 1.0, generator, masks.device)
    flat = torch.where(inside, keys, torch.full_like(keys, -1.0)).argmax(dim=1)
    centres = torch.stack(torch.unravel_index(flat, spatial), dim=1).to(torch.float32)
    return centres, inside.any(dim=1)
