"""Batched 2D Perlin noise with a different lattice resolution per sample (DRAEM's mask source).

Written here rather than taken from a library because the usual implementations (``perlin-numpy``,
the DRAEM reference) make one image at a time in NumPy with one resolution; this one makes a whole
batch in one pass of torch ops on the images' device, each sample with its own resolution.
"""

from __future__ import annotations

import math

import torch

from AnomalySegLib.anomalies._random import integers, uniform


def _fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic interpolant 6t⁵ − 15t⁴ + 10t³."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def next_power_of_two(value: int) -> int:
    """The smallest power of two ≥ ``value``."""
    return 1 << max(0, math.ceil(math.log2(value)))


def perlin_noise_2d(
    shape: tuple[int, int],
    resolutions: torch.Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Gradient noise, one image per row of ``resolutions``.

    As in DRAEM, the lattice spans a square of side ``next_power_of_two(max(shape))`` pixels and the
    image is its top-left ``shape`` corner, so a resolution of ``r`` cells means cells of
    ``side / r`` pixels.

    Args:
        shape: ``(H, W)`` of the output, pixels.
        resolutions: ``[B, 2]`` integer lattice cells along (y, x) for each sample, each in
            ``1 .. side``.
        generator: source of the random gradient directions.
        device: where the result lives.

    Returns:
        ``[B, H, W]`` float32 noise, roughly in [−1, 1] (√2 × the classic range).
    """
    device = torch.device(device)
    height, width = shape
    side = next_power_of_two(max(height, width))
    resolutions = resolutions.to(device=device, dtype=torch.float32)
    batch = resolutions.shape[0]
    lattice = int(resolutions.max().item()) + 1
    angles = uniform((batch, lattice * lattice), 0.0, 2 * math.pi, generator, device)

    # Lattice coordinates of the pixel positions, per sample: [B, H] and [B, W].
    coord_y = torch.arange(height, device=device, dtype=torch.float32)[None] * resolutions[:, :1] / side
    coord_x = torch.arange(width, device=device, dtype=torch.float32)[None] * resolutions[:, 1:] / side
    cell_y, cell_x = coord_y.floor().long(), coord_x.floor().long()
    frac_y = (coord_y - cell_y)[:, :, None].expand(batch, height, width)
    frac_x = (coord_x - cell_x)[:, None, :].expand(batch, height, width)

    def corner_dot(dy: int, dx: int) -> torch.Tensor:
        index = ((cell_y + dy)[:, :, None] * lattice + (cell_x + dx)[:, None, :]).reshape(batch, -1)
        angle = torch.gather(angles, 1, index).view(batch, height, width)
        return (frac_y - dy) * torch.cos(angle) + (frac_x - dx) * torch.sin(angle)

    fade_y, fade_x = _fade(frac_y), _fade(frac_x)
    top = torch.lerp(corner_dot(0, 0), corner_dot(0, 1), fade_x)
    bottom = torch.lerp(corner_dot(1, 0), corner_dot(1, 1), fade_x)
    return math.sqrt(2.0) * torch.lerp(top, bottom, fade_y)


def random_perlin_noise_2d(
    batch: int,
    shape: tuple[int, int],
    scale_exponents: tuple[int, int] = (0, 6),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """DRAEM's noise: per sample and per axis ``2^k`` cells, ``k ~ U{scale_exponents}``.

    Returns:
        ``[B, H, W]`` float32 noise.
    """
    device = torch.device(device)
    side = next_power_of_two(max(shape))
    low, high = scale_exponents
    if not 0 <= low <= high or 2**high > side:
        raise ValueError(f"scale exponents {scale_exponents} must satisfy 0 <= low <= high, 2^high <= {side}")
    resolutions = 2 ** integers((batch, 2), low, high, generator, device)
    return perlin_noise_2d(shape, resolutions, generator, device)
