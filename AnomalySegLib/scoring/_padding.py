"""Symmetric ("half-sample") padding, the boundary rule of scipy.ndimage's default ``mode="reflect"``.

torch's ``F.pad(mode="reflect")`` mirrors about the edge sample (d c b | a b c d → c b | a b c d) and
needs the pad to be smaller than the axis; scipy and scikit-image mirror including it (b a | a b c d)
for any pad. Filters here use scipy's rule so that they match the reference implementations
(``skimage.metrics.structural_similarity``, ``scipy.ndimage.median_filter``) voxel for voxel.
"""

from __future__ import annotations

import torch


def symmetric_pad(tensor: torch.Tensor, dim: int, pad: int) -> torch.Tensor:
    """Pad ``pad`` samples on both sides of axis ``dim`` by mirroring (edge sample repeated)."""
    if pad == 0:
        return tensor
    size = tensor.shape[dim]
    index = torch.arange(-pad, size + pad, device=tensor.device)
    period = torch.remainder(index, 2 * size)
    index = torch.where(period < size, period, 2 * size - 1 - period)
    return tensor.index_select(dim, index)
