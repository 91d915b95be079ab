"""Pseudo-healthy reconstruction (Stage I at test time): one network pass per noise level, averaged.

For each noise level t (default 250, 500, 750 of T = 1000) a slice is noised once and the network
predicts the clean slice x̂0(t) in a single pass; the reconstruction is the mean over the levels. There
is no iterative sampling. Plain DDPM and cDDPM noise the whole slice; pDDPM noises one patch at a time,
tiling the slice, and stitches the patch predictions (overlaps averaged).

Intensities: callers pass and receive slices in [0, 1]; the network works in [-1, 1], as in the
authors' code. Determinism: all random draws come from a CPU ``torch.Generator``, and the noise of a
whole volume is drawn before it is split into chunks, so a seed gives the same result for any chunk
size and on any device (up to floating-point rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from AnomalySegLib.bundle import ModelBundle
from AnomalySegLib.device import autocast, autocast_dtype, choose_device
from AnomalySegLib.diffusion.noise import sample_noise
from AnomalySegLib.diffusion.schedule import NoiseSchedule
from AnomalySegLib.diffusion.spec import PatchSpec, ReconSpec
from AnomalySegLib.errors import ModelBundleError
from AnomalySegLib.networks.denoiser import Denoiser

DEFAULT_NOISE_LEVELS = (250, 500, 750)
RECON_COMPONENT = "recon"
# Peak activation memory of one 96×96 slice through DiffusionModelUNet, per first-level channel, in
# bytes: calibrated on 96 slices of the (128, 256, 256) model peaking at ~7 GB in fp32 (docs/design.md,
# "Measured costs the code relies on").
_BYTES_PER_PIXEL_CHANNEL_FP32 = 64


@dataclass
class ReconstructionResult:
    """``mean`` ``[B, 1, H, W]`` and ``per_level`` ``[L, B, 1, H, W]``, float32 in [0, 1]."""

    mean: torch.Tensor
    per_level: torch.Tensor
    noise_levels: tuple[int, ...]


@dataclass
class VolumeReconstruction:
    """A volume's reconstruction: ``mean`` ``[Z, H, W]`` and ``per_level`` ``[L, Z, H, W]`` (numpy float32)."""

    mean: np.ndarray
    per_level: np.ndarray
    noise_levels: tuple[int, ...]


def to_model_scale(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Slices ``[B, 1, H, W]`` in [0, 1] → network input ``[B, 1, h, w]`` in [-1, 1] (area resize)."""
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="area")
    return images * 2.0 - 1.0


def from_model_scale(x0: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Network output ``[B, 1, h, w]`` in [-1, 1] → slices ``[B, 1, H, W]`` in [0, 1] (bilinear resize)."""
    images = (x0.float() + 1.0) * 0.5
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images.clamp(0.0, 1.0)


def patch_origins(size: tuple[int, int], patch: PatchSpec) -> list[tuple[int, int]]:
    """Top-left corners ``(row, col)`` of the patches that tile a ``size`` grid (last ones flush)."""

    def starts(length: int) -> list[int]:
        side = min(patch.size, length)
        positions = list(range(0, length - side + 1, patch.stride))
        if positions[-1] != length - side:
            positions.append(length - side)
        return positions

    return [(row, col) for row in starts(size[0]) for col in starts(size[1])]


def patch_mask(shape: tuple[int, ...], origins: torch.Tensor, side: int, device: torch.device) -> torch.Tensor:
    """Float mask ``shape`` ``[B, 1, h, w]``: 1 inside the ``side``-pixel patch at ``origins`` ``[B, 2]``."""
    rows = torch.arange(shape[-2], device=device).view(1, -1, 1)
    cols = torch.arange(shape[-1], device=device).view(1, 1, -1)
    top, left = origins[:, 0].view(-1, 1, 1).to(device), origins[:, 1].view(-1, 1, 1).to(device)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return inside.unsqueeze(1).float()


def corrupt(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noised network input: all of ``x0`` or, with a ``region`` mask (pDDPM), only inside it."""
    noised = schedule.add_noise(x0, noise, timesteps)
    return noised if region is None else region * noised + (1.0 - region) * x0


class Reconstructor:
    """A Stage I model ready for inference (network in eval mode on ``device``).

    Args:
        spec: the model description.
        network: the denoiser with trained weights.
        device: where to compute.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"`` (see :mod:`AnomalySegLib.device`).
        noise_levels: default test noise levels.
        channels_last: keep weights and inputs in the channels-last memory format (faster convolutions
            on tensor-core GPUs under 16-bit autocast; ``scripts/gpu_check.py`` measures it).
        compile_backend: run the network through ``torch.compile`` with this backend (e.g.
            ``"inductor"``); ``None``: eager. The first pass of each batch shape pays the compilation.
    """

    def __init__(
        self,
        spec: ReconSpec,
        network: Denoiser,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        noise_levels: Sequence[int] = DEFAULT_NOISE_LEVELS,
        channels_last: bool = False,
        compile_backend: str | None = None,
    ) -> None:
        self.spec = spec
        self.device = choose_device(device)
        self.network = network.to(self.device).eval()
        self.channels_last = channels_last
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self._forward = self.network if compile_backend is None else torch.compile(self.network, backend=compile_backend)
        self.autocast_dtype = autocast_dtype(self.device, precision)
        self.schedule = NoiseSchedule(spec.schedule)
        self.noise_levels = tuple(int(t) for t in noise_levels)

    @torch.no_grad()
    def sample_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise ``[batch, 1, h, w]`` on the network grid, drawn from ``generator`` (CPU)."""
        return sample_noise(self.spec.noise, (batch, 1, *self.spec.image_size), generator, self.device)

    @torch.no_grad()
    def predict_x0(
        self,
        images: torch.Tensor,
        timesteps: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noise each slice at its own timestep and predict the clean slice in one network pass.

        Args:
            images: ``[B, 1, H, W]`` slices in [0, 1] (any device).
            timesteps: ``[B]`` integer noise levels in ``[0, T)``.
            generator: CPU generator for the noise (ignored when ``noise`` is given).
            noise: ``[B, 1, h, w]`` noise on the network grid (from :meth:`sample_noise`).

        Returns:
            ``[B, 1, H, W]`` float32 in [0, 1] on ``self.device``.
        """
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be [B, 1, H, W], got {tuple(images.shape)}")
        x0 = to_model_scale(images.to(self.device, torch.float32), self.spec.image_size)
        if noise is None:
            noise = self.sample_noise(x0.shape[0], generator)
        noise = noise.to(self.device)
        timesteps = timesteps.to(self.device, torch.long)
        if self.spec.patch is None:
            prediction = self._network(corrupt(self.schedule, x0, noise, timesteps), timesteps, x0)
        else:
            prediction = self._stitched_patches(x0, noise, timesteps)
        return from_model_scale(prediction, tuple(images.shape[-2:]))

    @torch.no_grad()
    def reconstruct(
        self,
        images: torch.Tensor,
        noise_levels: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> ReconstructionResult:
        """x̂0 at each noise level (one pass each) and their mean, for slices ``[B, 1, H, W]`` in [0, 1]."""
        levels = tuple(noise_levels or self.noise_levels)
        per_level = []
        for level in levels:
            timesteps = torch.full((images.shape[0],), level, dtype=torch.long)
            per_level.append(self.predict_x0(images, timesteps, generator))
        stacked = torch.stack(per_level)
        return ReconstructionResult(mean=stacked.mean(0), per_level=stacked, noise_levels=levels)

    def _network(self, x_t: torch.Tensor, timesteps: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x_t, x0 = (x.contiguous(memory_format=torch.channels_last) for x in (x_t, x0))
        with autocast(self.device, self.autocast_dtype):
            return self._forward(x_t, timesteps, x0 if self.spec.denoiser.conditioned else None).float()

    def _stitched_patches(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        side = min(self.spec.patch.size, *x0.shape[-2:])
        total = torch.zeros_like(x0)
        count = torch.zeros_like(x0)
        for row, col in patch_origins(tuple(x0.shape[-2:]), self.spec.patch):
            origins = torch.tensor([[row, col]]).expand(x0.shape[0], 2)
            region = patch_mask(tuple(x0.shape), origins, side, self.device)
            prediction = self._network(corrupt(self.schedule, x0, noise, timesteps, region), timesteps, x0)
            total += region * prediction
            count += region
        return total / count


def default_chunk_size(reconstructor: Reconstructor, memory_bytes: int | None = None) -> int:
    """How many slices to push through the network at once, from the memory available.

    Uses half of the free GPU memory (CUDA) or of the available RAM (elsewhere), with a per-slice
    estimate calibrated on measurements (module constant), halved again under 16-bit autocast.
    """
    device = reconstructor.device
    if memory_bytes is None:
        if device.type == "cuda":
            memory_bytes = torch.cuda.mem_get_info(device)[0]
        else:
            memory_bytes = _available_ram()
    height, width = reconstructor.spec.image_size
    per_slice = _BYTES_PER_PIXEL_CHANNEL_FP32 * height * width * reconstructor.spec.denoiser.unet.channels[0]
    if reconstructor.autocast_dtype is not None:
        per_slice //= 2
    return int(max(1, min(256, memory_bytes // 2 // per_slice)))


def reconstruct_volume(
    reconstructor: Reconstructor,
    volume: np.ndarray | torch.Tensor,
    noise_levels: Sequence[int] | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VolumeReconstruction:
    """Reconstruct every axial slice of ``volume`` ``[Z, H, W]`` (in [0, 1]).

    Args:
        noise_levels: default: the reconstructor's (from the bundle).
        seed: seeds the noise; same seed, same result (up to float rounding), whatever ``chunk_size``.
        chunk_size: slices per network pass, counting each noise level of a slice once (default:
            :func:`default_chunk_size`); chunks may mix noise levels.
        progress: called as ``progress(done, total)`` in chunks (network passes).
    """
    slices = torch.as_tensor(np.asarray(volume, dtype=np.float32)).unsqueeze(1)  # [Z, 1, H, W]
    levels = tuple(noise_levels or reconstructor.noise_levels)
    depth = slices.shape[0]
    chunk_size = chunk_size or default_chunk_size(reconstructor)
    generator = torch.Generator().manual_seed(seed)
    # One row per (noise level, slice), so a chunk can mix levels: few large passes on a GPU.
    noise = torch.cat([reconstructor.sample_noise(depth, generator) for _ in levels])
    timesteps = torch.tensor(levels, dtype=torch.long).repeat_interleave(depth)
    rows = torch.arange(len(levels) * depth)
    predictions = torch.empty((len(rows), *slices.shape[1:]), dtype=torch.float32)
    starts = range(0, len(rows), chunk_size)
    for done, start in enumerate(starts, 1):
        chunk = rows[start : start + chunk_size]
        predictions[chunk] = reconstructor.predict_x0(
            slices[chunk % depth], timesteps[chunk], noise=noise[start : start + chunk_size]
        ).cpu()
        if progress is not None:
            progress(done, len(starts))
    per_level = predictions[:, 0].reshape(len(levels), depth, *slices.shape[2:]).numpy()
    return VolumeReconstruction(mean=per_level.mean(0), per_level=per_level, noise_levels=levels)


def build_network(spec: ReconSpec, state_dict: dict[str, torch.Tensor] | None = None) -> Denoiser:
    """The denoiser of ``spec``, with ``state_dict`` loaded (strictly) when given."""
    network = Denoiser(spec.denoiser)
    if state_dict is not None:
        network.load_state_dict(state_dict, strict=True)
    return network


def load_reconstructor(
    bundle: ModelBundle, device: torch.device | str = "auto", precision: str = "auto"
) -> Reconstructor:
    """The Stage I model of ``bundle`` (its ``"recon"`` component and ``"noise_levels"`` section).

    Raises:
        ModelBundleError: no ``"recon"`` component, or its architecture or weights do not fit.
    """
    component = bundle.component(RECON_COMPONENT)
    where = bundle.path if bundle.path is not None else "<unsaved bundle>"
    try:
        spec = ReconSpec.from_dict(component.architecture)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelBundleError(where, f"invalid 'recon' architecture ({error!r})") from error
    try:
        network = build_network(spec, component.state_dict)
    except RuntimeError as error:
        raise ModelBundleError(where, f"'recon' weights do not fit its architecture ({error})") from error
    levels = bundle.noise_levels or DEFAULT_NOISE_LEVELS
    return Reconstructor(spec, network, device=device, precision=precision, noise_levels=levels)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # unknown platform: assume 4 GiB
