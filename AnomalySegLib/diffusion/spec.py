"""The complete description of a Stage I model (the ``architecture`` of a bundle's ``"recon"`` component)."""

from __future__ import annotations

from dataclasses import dataclass, field

from AnomalySegLib.diffusion.noise import NoiseSpec
from AnomalySegLib.diffusion.schedule import ScheduleSpec
from AnomalySegLib.networks.denoiser import DenoiserSpec
from AnomalySegLib.spec_io import JsonSpec

OBJECTIVES = ("pred_x0",)


@dataclass(frozen=True)
class PatchSpec(JsonSpec):
    """pDDPM patches: side ``size`` in pixels of the network grid; test-time tiling step ``stride``."""

    SPEC_NAME = "pDDPM patch spec"

    size: int = 48
    stride: int = 48

    def __post_init__(self) -> None:
        if self.size < 1 or not 1 <= self.stride <= self.size:
            raise ValueError(f"patch needs size >= 1 and 1 <= stride <= size, got {self}")


@dataclass(frozen=True)
class ReconSpec(JsonSpec):
    """A Stage I model: network, slice grid, diffusion schedule, noise, patches (pDDPM only).

    ``image_size`` ``(H, W)`` is the grid the network runs on; slices of another size are resized to
    it (area averaging) and the reconstruction back (bilinear), e.g. a 48×48 model on 96×96 slices.
    """

    SPEC_NAME = "Stage I model spec"

    denoiser: DenoiserSpec = field(default_factory=DenoiserSpec)
    image_size: tuple[int, int] = (96, 96)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    patch: PatchSpec | None = None
    objective: str = "pred_x0"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {self.objective!r}")
        if self.denoiser.kind == "pddpm" and self.patch is None:
            raise ValueError("a patched DDPM ('pddpm') needs a 'patch' section")
        if self.denoiser.kind != "pddpm" and self.patch is not None:
            raise ValueError(f"'patch' applies to kind 'pddpm' only, not {self.denoiser.kind!r}")
        levels = len(self.denoiser.unet.channels) - 1
        if any(side % (2**levels) for side in self.image_size):
            raise ValueError(f"image_size {self.image_size} must be divisible by {2**levels} for this U-Net")
