"""3D median filter in torch (runs where the scores are, GPU included).

Matches ``scipy.ndimage.median_filter(volume, size=k)`` (default ``mode="reflect"``, i.e. symmetric
boundaries) voxel for voxel; scipy would force a device round-trip and is single-threaded.
"""

from __future__ import annotations

import torch

from AnomalySegLib.scoring._padding import symmetric_pad

#: Voxels per chunk of the unfolded neighbourhoods (k³ floats each): bounds memory at ~256 MB for k = 5.
_CHUNK_VOXELS = 1 << 19


def median_filter_3d(volume: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """Median over each voxel's ``k×k×k`` neighbourhood.

    Args:
        volume: ``[D, H, W]``.
        kernel_size: odd k (paper: 5).

    Returns:
        ``[D, H, W]``, same dtype and device.
    """
    if volume.ndim != 3:
        raise ValueError(f"median_filter_3d needs a [D, H, W] volume, got {tuple(volume.shape)}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if kernel_size == 1:
        return volume.clone()
    radius = kernel_size // 2
    padded = volume
    for axis in range(3):
        padded = symmetric_pad(padded, axis, radius)
    depth, height, width = volume.shape
    slab = max(1, _CHUNK_VOXELS // (height * width))
    out = torch.empty_like(volume)
    for start in range(0, depth, slab):
        stop = min(depth, start + slab)
        block = padded[start : stop + 2 * radius]
        windows = block.unfold(0, kernel_size, 1).unfold(1, kernel_size, 1).unfold(2, kernel_size, 1)
        out[start:stop] = windows.reshape(stop - start, height, width, -1).median(dim=-1).values
    return out
