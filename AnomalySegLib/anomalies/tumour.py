"""Tumour-like synthetic anomalies: an enhancing rim around a darker core, oedema around it, mass effect.

Blobs (:mod:`AnomalySegLib.anomalies.lesion`) move one region towards one level; DRAEM
(:mod:`AnomalySegLib.anomalies.draem`) pastes a foreign texture. A contrast-enhanced T1 of a high-grade
glioma or a metastasis looks like neither: a bright, often irregular rim of enhancement, a darker
necrotic or cystic core inside it, a rim of T1-dark oedema fading into the white matter around it, and the
surrounding anatomy pushed aside. A SegUnet trained on blobs and textures alone learned to find those
and answered real enhancing tumours less the longer it trained (BENCHMARKS.md, "Diagnosis ... 2026-12-07
afternoon"). This family is the generic radiological pattern, not a copy of any one case: every
parameter is drawn from a wide range, and the solid (no core) and oedema-free versions are included.

The appearance is a radial profile of a normalised distance ``d`` (0 at the centre, 1 on the outer edge of
the enhancing rim, irregular), applied to 2D slices (:class:`TumourAnomalyGenerator`, Stage II training)
and to 3D volumes (:func:`paint_tumour`, the generalization benchmark's held-out lesions) alike:

1. mass effect: tissue outside the tumour is pushed outwards radially by ``m·R`` at the rim, fading with
   distance (``m ~ U[mass_effect_range]``); not labelled (it is displaced healthy tissue);
2. oedema, ``1 < d < 1 + w`` (``w ~ U[oedema_width_range]``, relative to the tumour's radius): the
   intensity moves towards ``v_o ~ U[oedema_range]`` by ``s_o ~ U[oedema_strength_range]``, fading
   linearly to 0 at ``1 + w``;
3. rim, ``c < d ≤ 1`` (``c ~ U[core_fraction_range]``, 0: a solid enhancing tumour): towards
   ``max(v_r, t + k)`` by ``s_r ~ U[rim_strength_range]``, with ``v_r ~ U[rim_range]``, ``t`` the mean
   intensity of the tissue it replaces and ``k ~ U[rim_contrast_range]``: enhancement is relative to the
   tissue around, so a tumour in white matter as bright as ``v_r`` still has a rim brighter than it;
4. core, ``d ≤ c``: towards ``v_c ~ U[core_range]`` by ``s_r``;
5. ground truth: the voxels of the tumour (``d < 1``, rim and core) and of its oedema in the brain whose
   intensity changed by at least ``min_change``, i.e. where it is clearly visible: oedema of the level of the
   grey matter it crosses changes nothing there, its faint fading edge is not labelled, nor is a solid
   tumour in tissue already at the top of the intensity range. A label made mostly of changes of 0.05
   taught nothing and made held-out white-matter tumours unfindable (BENCHMARKS.md "Diagnosis ...
   2026-12-07 evening").

Edges are smooth steps of ``edge_px`` pixels/voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from AnomalySegLib.anomalies._random import uniform
from AnomalySegLib.anomalies.draem import SyntheticAnomalies
from AnomalySegLib.anomalies.lesion import irregular_ellipses

#: How fast the mass effect fades outside the tumour: ``exp(−MASS_EFFECT_DECAY·(d − 1))``.
MASS_EFFECT_DECAY = 2.0


@dataclass(frozen=True)
class TumourAppearance:
    """Ranges of the radial profile's random draws (intensities in the model's [0, 1] range).

    Attributes:
        core_fraction_range: radius of the non-enhancing core relative to the tumour's (0: solid).
        core_range: target level ``v_c`` of the core (necrosis, cyst: dark).
        rim_range: lowest target level ``v_r`` of the enhancing rim.
        rim_contrast_range: how far the rim's target lies above the mean of the tissue it replaces, ``k``.
        rim_strength_range: how far rim and core move towards their levels.
        oedema_width_range: extent of the oedema beyond the rim, relative to the tumour's radius.
        oedema_range: target level ``v_o`` of the oedema (T1: darker than white matter).
        oedema_strength_range: how far the oedema moves towards ``v_o`` at the rim.
        mass_effect_range: outward displacement at the rim, relative to the tumour's radius.
        edge_px: width of the smooth steps between the zones, pixels/voxels.
        min_change: smallest intensity change labelled anomalous.
    """

    core_fraction_range: tuple[float, float] = (0.0, 0.75)
    core_range: tuple[float, float] = (0.05, 0.4)
    rim_range: tuple[float, float] = (0.9, 1.0)
    rim_contrast_range: tuple[float, float] = (0.15, 0.4)
    rim_strength_range: tuple[float, float] = (0.8, 1.0)
    oedema_width_range: tuple[float, float] = (0.0, 0.8)
    oedema_range: tuple[float, float] = (0.2, 0.5)
    oedema_strength_range: tuple[float, float] = (0.3, 0.8)
    mass_effect_range: tuple[float, float] = (0.0, 0.2)
    edge_px: float = 0.7
    min_change: float = 0.1

    def __post_init__(self) -> None:
        for name in ("core_fraction_range", "core_range", "rim_range", "rim_contrast_range", "rim_strength_range",
                     "oedema_width_range", "oedema_range", "oedema_strength_range", "mass_effect_range"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} {getattr(self, name)} must satisfy 0 <= low <= high")
        for name in ("core_fraction_range", "core_range", "rim_range", "rim_contrast_range", "rim_strength_range",
                     "oedema_range", "oedema_strength_range"):
            if getattr(self, name)[1] > 1.0:
                raise ValueError(f"{name} {getattr(self, name)} must lie in [0, 1]")
        if self.mass_effect_range[1] >= 0.5:
            raise ValueError(f"mass_effect_range {self.mass_effect_range} must stay below 0.5 (folding)")
        if self.edge_px <= 0 or self.min_change < 0:
            raise ValueError("edge_px must be > 0 and min_change >= 0")

    def draw(self, batch: int, generator: torch.Generator | None, device: torch.device) -> dict[str, torch.Tensor]:
        """One set of profile parameters per sample: ``{name: [B]}``."""
        names = ("core_fraction", "core", "rim", "rim_contrast", "rim_strength", "oedema_width", "oedema",
                 "oedema_strength", "mass_effect")
        return {name: uniform((batch,), *getattr(self, f"{name}_range"), generator, device) for name in names}


def _inside(distance: torch.Tensor, boundary: torch.Tensor, radius_px: torch.Tensor, edge_px: float) -> torch.Tensor:
    """Smooth step: ~1 where ``distance < boundary``, ~0 beyond, over ``edge_px`` pixels at ``radius_px``."""
    return torch.sigmoid((boundary - distance) * radius_px / edge_px)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B]`` → ``[B, 1, 1, ...]`` broadcastable against ``like`` ``[B, 1, *spatial]``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def _tissue_mean(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean intensity per sample: ``[B, 1, *spatial]`` → ``[B, 1, 1, ...]`` (0 where no weight)."""
    dims = tuple(range(1, images.ndim))
    total = (images * weights).sum(dims, keepdim=True)
    return total / weights.sum(dims, keepdim=True).clamp(min=1e-6)


def push_outwards(images: torch.Tensor, smooth_distance: torch.Tensor, centres: torch.Tensor,
                  mass_effect: torch.Tensor) -> torch.Tensor:
    """Mass effect: resample ``images`` so that tissue moves away from ``centres``.

    A voxel at normalised distance ``d`` takes the intensity from ``d − D(d)`` along its ray, with
    ``D(d) = m·min(d, 1)·exp(−MASS_EFFECT_DECAY·max(d − 1, 0))`` (monotone for ``m < 0.5``).

    Args:
        images: ``[B, 1, *spatial]`` (2 or 3 spatial dims).
        smooth_distance: ``[B, 1, *spatial]`` normalised distance of a smooth ellipse(oid).
        centres: ``[B, ndim]`` voxel indices of the centres.
        mass_effect: ``[B]`` ``m``.
    """
    spatial = images.shape[2:]
    d = smooth_distance.clamp(min=1e-3)
    push = _per_sample(mass_effect, d) * d.clamp(max=1.0) * torch.exp(-MASS_EFFECT_DECAY * (d - 1.0).clamp(min=0.0))
    scale = (d - push) / d  # [B, 1, *spatial]
    axes = torch.meshgrid(*(torch.arange(n, device=images.device, dtype=torch.float32) for n in spatial), indexing="ij")
    source = []
    for axis, coordinate in enumerate(axes):
        centre = centres[:, axis].view(-1, *([1] * len(spatial)))
        position = centre + (coordinate[None] - centre) * scale[:, 0]
        source.append(2.0 * position / max(spatial[axis] - 1, 1) - 1.0)
    grid = torch.stack(source[::-1], dim=-1)  # grid_sample wants (x, y[, z]) last
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)


def paint_tumour(images: torch.Tensor, brain: torch.Tensor, distance: torch.Tensor, smooth_distance: torch.Tensor,
                 centres: torch.Tensor, radius_px: torch.Tensor, draws: dict[str, torch.Tensor],
                 appearance: TumourAppearance) -> SyntheticAnomalies:
    """The tumour of the module docstring, one per sample, on 2D or 3D images.

    Args:
        images: ``[B, 1, *spatial]`` float in [0, 1].
        brain: ``[B, 1, *spatial]`` bool; nothing changes outside it.
        distance: ``[B, 1, *spatial]`` normalised distance (1 on the irregular tumour boundary).
        smooth_distance: the same without irregularity (drives the mass effect).
        centres: ``[B, ndim]`` voxel indices of the centres.
        radius_px: ``[B]`` tumour radius in pixels/voxels (scales the edge width).
        draws: :meth:`TumourAppearance.draw`'s parameters.
        appearance: the profile's settings.

    Returns:
        :class:`SyntheticAnomalies` (``masks`` 0/1 of ``images``' dtype).
    """
    dtype = images.dtype
    original = images.float()
    brain = brain > 0
    radius = _per_sample(radius_px, original)
    pushed = torch.where(brain, push_outwards(original, smooth_distance, centres, draws["mass_effect"]), original)

    width = _per_sample(draws["oedema_width"], original)
    core_edge = _per_sample(draws["core_fraction"], original)
    tumour = _inside(distance, torch.ones_like(width), radius, appearance.edge_px)
    core = _inside(distance, core_edge, radius, appearance.edge_px) * (core_edge > 0)
    fade = (1.0 - (distance - 1.0) / width.clamp(min=1e-3)).clamp(0.0, 1.0)
    oedema = (1.0 - tumour) * fade * (width > 0)

    level = _per_sample(draws["oedema"], original)
    result = pushed + _per_sample(draws["oedema_strength"], original) * oedema * (level - pushed)
    rim_level = torch.maximum(_per_sample(draws["rim"], original),
                              _tissue_mean(pushed, tumour * brain) + _per_sample(draws["rim_contrast"], original))
    strength = _per_sample(draws["rim_strength"], original)
    result = result + strength * (tumour - core).clamp(min=0.0) * (rim_level - result)
    result = result + strength * core * (_per_sample(draws["core"], original) - result)
    result = torch.where(brain, result.clamp(0.0, 1.0), original)

    visible = (result - original).abs() >= appearance.min_change
    masks = brain & (distance < 1.0 + width) & visible
    return SyntheticAnomalies(images=result.to(dtype), masks=masks.to(dtype))


@dataclass(frozen=True)
class TumourAnomalyGenerator:
    """Seeded, batched tumour-like anomalies on 2D slices ``[B, 1, H, W]`` in [0, 1] (module docstring).

    Attributes:
        radius_range: mean radius of the enhancing tumour, pixels (2 mm pixels: 8–36 mm by default).
        aspect_range: ratio of the ellipse's axes.
        irregularity: relative amplitude of the boundary's Perlin deformation.
        appearance: the radial profile's ranges.
        probability: chance that a sample gets a tumour at all.
    """

    radius_range: tuple[float, float] = (4.0, 18.0)
    aspect_range: tuple[float, float] = (0.6, 1.0)
    irregularity: float = 0.25
    appearance: TumourAppearance = TumourAppearance()
    probability: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.radius_range[0] <= self.radius_range[1]:
            raise ValueError(f"radius_range {self.radius_range} must satisfy 0 < low <= high")
        if not 0.0 < self.aspect_range[0] <= self.aspect_range[1] <= 1.0:
            raise ValueError(f"aspect_range {self.aspect_range} must satisfy 0 < low <= high <= 1")
        if not 0.0 <= self.probability <= 1.0 or self.irregularity < 0:
            raise ValueError("probability must be in [0, 1] and irregularity >= 0")

    def __call__(self, images: torch.Tensor, brain_masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> SyntheticAnomalies:
        """Add at most one tumour to each slice (``images``, ``brain_masks``: ``[B, 1, H, W]``)."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be [B, 1, H, W], got {tuple(images.shape)}")
        batch, device = images.shape[0], images.device
        brain = brain_masks > 0
        field = irregular_ellipses(brain, self.radius_range, self.aspect_range, self.irregularity, generator)
        draws = self.appearance.draw(batch, generator, device)
        present = uniform((batch,), 0.0, 1.0, generator, device) < self.probability
        return paint_tumour(images, brain & _per_sample(present, brain), field.distance, field.smooth_distance,
                            field.centres, field.radius, draws, self.appearance)
