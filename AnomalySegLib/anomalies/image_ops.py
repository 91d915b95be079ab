"""Random intensity and geometric image operations on batches, used to texture synthetic anomalies.

The DRAEM recipe draws three of these per anomaly (imgaug's GammaContrast, MultiplyAndAddToBrightness,
pillike.EnhanceSharpness, Solarize, Posterize, Invert, pillike.Autocontrast, pillike.Equalize, Affine
rotate). imgaug works on one uint8 image at a time in NumPy; these re-implement the same operations
for float images in [0, 1] as batched torch ops with per-sample random parameters, so the generator
runs on the GPU and stays seeded by one :class:`torch.Generator`.

Every op has the signature ``op(images [B, 1, H, W] in [0, 1], generator) -> [B, 1, H, W] in [0, 1]``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from AnomalySegLib.anomalies._random import integers, uniform

ImageOp = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]

#: PIL's ImageFilter.SMOOTH kernel, which ImageEnhance.Sharpness blends against.
_PIL_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """``[B]`` → ``[B, 1, 1, 1]`` for broadcasting over images."""
    return values.view(-1, 1, 1, 1)


def rotate(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by its angle (degrees, counter-clockwise); zeros fill.

    Args:
        images: ``[B, C, H, W]``.
        angles_deg: ``[B]``.
    """
    batch, _, height, width = images.shape
    radians = angles_deg.to(images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    # Rotation in pixel units expressed in grid_sample's normalised [-1, 1] coordinates.
    theta = torch.zeros(batch, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * height / width
    theta[:, 1, 0] = sin * width / height
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gamma_contrast(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``x^γ``, γ ~ U[0.5, 2] (imgaug GammaContrast((0.5, 2.0)))."""
    gamma = uniform((images.shape[0],), 0.5, 2.0, generator, images.device)
    return images.clamp(min=0.0).pow(_per_sample(gamma))


def brightness(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``m·x + a``, m ~ U[0.8, 1.2], a ~ U[−30, 30]/255 (imgaug MultiplyAndAddToBrightness)."""
    batch = images.shape[0]
    multiply = uniform((batch,), 0.8, 1.2, generator, images.device)
    add = uniform((batch,), -30.0 / 255.0, 30.0 / 255.0, generator, images.device)
    return (images * _per_sample(multiply) + _per_sample(add)).clamp(0.0, 1.0)


def enhance_sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance.Sharpness: blend with PIL's SMOOTH-filtered image by ``factor`` (``[B]``).

    Factor 0 gives the smoothed image, 1 the original, 2 an unsharp-masked one. As in PIL, the
    one-pixel border keeps its original values.
    """
    kernel = _PIL_SMOOTH.to(images)[None, None]
    smoothed = images.clone()
    smoothed[..., 1:-1, 1:-1] = F.conv2d(images, kernel)
    return (smoothed + _per_sample(factor) * (images - smoothed)).clamp(0.0, 1.0)


def sharpness(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """:func:`enhance_sharpness` with factor ~ U[0, 2] (imgaug pillike.EnhanceSharpness)."""
    return enhance_sharpness(images, uniform((images.shape[0],), 0.0, 2.0, generator, images.device))


def solarize(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """With probability 0.5, invert values above a threshold ~ U[32, 128]/255 (imgaug Solarize)."""
    batch = images.shape[0]
    threshold = _per_sample(uniform((batch,), 32.0 / 255.0, 128.0 / 255.0, generator, images.device))
    active = _per_sample(uniform((batch,), 0.0, 1.0, generator, images.device) < 0.5)
    return torch.where(active & (images >= threshold), 1.0 - images, images)


def posterize_bits(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """PIL ImageOps.posterize on 8-bit levels: keep the ``bits`` (``[B]``, 1..8) most significant bits."""
    step = _per_sample(2.0 ** (8 - bits).to(images.dtype))
    levels = torch.round(images.clamp(0.0, 1.0) * 255.0)
    return torch.floor(levels / step) * step / 255.0


def posterize(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """:func:`posterize_bits` with bits ~ U{1..8} (imgaug Posterize)."""
    return posterize_bits(images, integers((images.shape[0],), 1, 8, generator, images.device))


def invert(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``1 − x`` (imgaug Invert)."""
    return 1.0 - images


def autocontrast(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Stretch each image's min..max to 0..1 (PIL ImageOps.autocontrast, cutoff 0); flat images stay."""
    flat = images.flatten(1)
    low = _per_sample(flat.min(dim=1).values)
    high = _per_sample(flat.max(dim=1).values)
    span = high - low
    return torch.where(span > 0, (images - low) / span.clamp(min=1e-12), images)


def equalize(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Histogram equalisation over 256 levels per image (as PIL ImageOps.equalize, without its
    integer step rounding): level ``v`` → ``#(pixels below v) / (N − #(pixels at the highest level))``,
    a monotone map that spreads the levels uniformly over [0, 1]. Single-level images stay as they are.
    """
    batch = images.shape[0]
    levels = torch.round(images.clamp(0.0, 1.0) * 255.0).long().flatten(1)
    histogram = torch.zeros(batch, 256, device=images.device, dtype=images.dtype)
    histogram.scatter_add_(1, levels, torch.ones_like(levels, dtype=images.dtype))
    below = histogram.cumsum(dim=1) - histogram
    highest = 255 - torch.flip(histogram > 0, dims=[1]).to(torch.uint8).argmax(dim=1, keepdim=True)
    span = levels.shape[1] - torch.gather(histogram, 1, highest)
    mapping = (below / span.clamp(min=1.0)).clamp(0.0, 1.0)
    equalized = torch.gather(mapping, 1, levels).view_as(images)
    return torch.where(_per_sample(span.view(-1) > 0), equalized, images)


def affine_rotate(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Rotate by an angle ~ U[−45°, 45°] (imgaug Affine(rotate=(−45, 45))), zeros fill."""
    angles = uniform((images.shape[0],), -45.0, 45.0, generator, images.device)
    return rotate(images, angles)


#: The DRAEM augmentation pool (hue/saturation left out: the images are single-channel).
AUGMENTATIONS: dict[str, ImageOp] = {
    "gamma_contrast": gamma_contrast,
    "brightness": brightness,
    "sharpness": sharpness,
    "solarize": solarize,
    "posterize": posterize,
    "invert": invert,
    "autocontrast": autocontrast,
    "equalize": equalize,
    "affine_rotate": affine_rotate,
}


def random_augment(
    images: torch.Tensor,
    count: int = 3,
    generator: torch.Generator | None = None,
    pool: dict[str, ImageOp] | None = None,
) -> torch.Tensor:
    """Apply ``count`` distinct ops drawn per sample from ``pool``, in random order.

    Each op runs once per stage on the subset of samples that drew it, so the cost is
    ``count × len(pool)`` batched ops at most, whatever the batch size.

    Args:
        images: ``[B, 1, H, W]`` in [0, 1].

    Returns:
        ``[B, 1, H, W]`` in [0, 1].
    """
    pool = AUGMENTATIONS if pool is None else pool
    ops = list(pool.values())
    if not 0 <= count <= len(ops):
        raise ValueError(f"cannot draw {count} distinct augmentations from a pool of {len(ops)}")
    batch = images.shape[0]
    # A random permutation per sample (argsort of uniform keys); its first `count` entries are the ops.
    keys = uniform((batch, len(ops)), 0.0, 1.0, generator, images.device)
    chosen = keys.argsort(dim=1)[:, :count]
    out = images.clone()
    for stage in range(count):
        for op_index, op in enumerate(ops):
            rows = (chosen[:, stage] == op_index).nonzero(as_tuple=True)[0]
            if rows.numel():
                out[rows] = op(out[rows], generator)
    return out
