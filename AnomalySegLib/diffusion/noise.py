"""The noise that corrupts slices in the forward diffusion process: simplex (default) or Gaussian.

Simplex noise follows AnoDDPM (Wyatt et al. 2022), which the paper's code uses: a sum of octaves of 3D
simplex noise sampled on the pixel grid, the k-th octave at coordinates ``pixel / (frequency / 2**k)``
with amplitude ``persistence**k``. Their implementation is numba on the CPU and draws one 2D field per
call for the whole batch; ours is vectorised torch on the tensor's device and draws an independent field
per sample (a random offset into the 3D noise volume), which is the same distribution.
We write simplex noise ourselves because neither torch nor MONAI offers it (Gustavson's formulation,
"Simplex noise demystified", 2005). The sum is not rescaled, as in the authors' code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from AnomalySegLib.spec_io import JsonSpec

NOISE_KINDS = ("simplex", "gaussian")

# Gradient directions of 3D simplex noise: the midpoints of the 12 edges of a cube.
_GRADIENTS_3D = (
    (1, 1, 0), (-1, 1, 0), (1, -1, 0), (-1, -1, 0),
    (1, 0, 1), (-1, 0, 1), (1, 0, -1), (-1, 0, -1),
    (0, 1, 1), (0, -1, 1), (0, 1, -1), (0, -1, -1),
)  # fmt: skip
_PERMUTATION_SEED = 20240703  # fixed lattice hash; the randomness comes from per-sample offsets
_LATTICE_PERIOD = 256


@dataclass(frozen=True)
class NoiseSpec(JsonSpec):
    """How to draw noise (stored in the model bundle).

    Attributes:
        kind: ``"simplex"`` or ``"gaussian"``.
        octaves, persistence, frequency: simplex parameters (paper: 6, 0.8, 64; frequency in pixels,
            the wavelength of the coarsest octave).
    """

    SPEC_NAME = "noise spec"

    kind: str = "simplex"
    octaves: int = 6
    persistence: float = 0.8
    frequency: float = 64.0

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {NOISE_KINDS}, not {self.kind!r}")
        if self.octaves < 1 or self.frequency <= 0 or self.persistence <= 0:
            raise ValueError(f"invalid simplex noise parameters: {self}")


def sample_noise(
    spec: NoiseSpec,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Noise of ``shape`` ``[B, C, H, W]`` (float32) on ``device``.

    The random draws come from ``generator`` (a CPU generator; default: torch's global one) so that
    the same seed gives the same noise on every device and for any chunking of a batch.
    """
    if spec.kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
    batch, channels, height, width = shape
    offsets = torch.rand((batch * channels, spec.octaves, 3), generator=generator) * _LATTICE_PERIOD
    noise = simplex_octaves(
        (height, width), offsets.to(device), spec.persistence, spec.frequency
    )
    return noise.reshape(batch, channels, height, width)


def simplex_octaves(
    size: tuple[int, int], offsets: torch.Tensor, persistence: float, frequency: float
) -> torch.Tensor:
    """Fractal simplex noise fields ``[N, H, W]``, one per row of ``offsets`` ``[N, octaves, 3]``."""
    height, width = size
    device = offsets.device
    shape = (offsets.shape[0], height, width)
    rows = torch.arange(height, device=device, dtype=torch.float32).view(1, height, 1)
    cols = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, width)
    noise = torch.zeros(shape, device=device)
    amplitude = 1.0
    # One octave at a time: measured faster than one evaluation over all octaves (cache-friendly).
    for octave in range(offsets.shape[1]):
        offset = offsets[:, octave].view(-1, 3, 1, 1)
        x = (cols / frequency + offset[:, 0]).expand(shape)
        y = (rows / frequency + offset[:, 1]).expand(shape)
        noise += amplitude * simplex3(x, y, offset[:, 2].expand(shape))
        frequency /= 2
        amplitude *= persistence
    return noise


def simplex3(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """3D simplex noise in about [-1, 1] at points ``(x, y, z)`` (same-shape float tensors)."""
    permutation, gradients = _tables(x.device)
    skew = (x + y + z) / 3.0
    i, j, k = torch.floor(x + skew), torch.floor(y + skew), torch.floor(z + skew)
    unskew = (i + j + k) / 6.0
    x0, y0, z0 = x - (i - unskew), y - (j - unskew), z - (k - unskew)

    # Which of the six tetrahedra of the skewed cube holds the point: offsets of its 2nd and 3rd corner
    # (where coordinates tie, the rules pick one valid tetrahedron).
    x_ge_y, y_ge_z, x_ge_z = x0 >= y0, y0 >= z0, x0 >= z0
    second = (x_ge_y & x_ge_z, ~x_ge_y & y_ge_z, ~x_ge_z & ~y_ge_z)
    third = (x_ge_y | x_ge_z, ~x_ge_y | y_ge_z, ~x_ge_z | ~y_ge_z)
    ii = torch.remainder(i, _LATTICE_PERIOD).long()
    jj = torch.remainder(j, _LATTICE_PERIOD).long()
    kk = torch.remainder(k, _LATTICE_PERIOD).long()
    total = _corner(permutation, gradients, ii, jj, kk, x0, y0, z0)
    for corner, shift in ((second, 1.0 / 6.0), (third, 2.0 / 6.0)):
        di, dj, dk = (c.long() for c in corner)
        total += _corner(
            permutation, gradients, ii + di, jj + dj, kk + dk,
            x0 - di + shift, y0 - dj + shift, z0 - dk + shift,
        )
    total += _corner(permutation, gradients, ii + 1, jj + 1, kk + 1, x0 - 0.5, y0 - 0.5, z0 - 0.5)
    return 32.0 * total


def _corner(permutation, gradients, ii, jj, kk, dx, dy, dz) -> torch.Tensor:
    """One simplex corner's contribution: radial falloff⁴ × (gradient · offset)."""
    hashed = permutation[ii + permutation[jj + permutation[kk]]]
    falloff = torch.clamp(0.6 - dx * dx - dy * dy - dz * dz, min=0.0)
    falloff = falloff * falloff
    dot = gradients[0][hashed] * dx + gradients[1][hashed] * dy + gradients[2][hashed] * dz
    return falloff * falloff * dot


_TABLE_CACHE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (tripled) lattice permutation table and the per-hash gradient table on ``device``."""
    if device not in _TABLE_CACHE:
        generator = torch.Generator().manual_seed(_PERMUTATION_SEED)
        permutation = torch.randperm(_LATTICE_PERIOD, generator=generator)
        gradients = torch.tensor(_GRADIENTS_3D, dtype=torch.float32)[torch.arange(_LATTICE_PERIOD) % 12]
        _TABLE_CACHE[device] = (
            torch.cat([permutation, permutation, permutation]).to(device),
            gradients.T.contiguous().to(device),  # [3, 256]: gradient of each hashed lattice value
        )
    return _TABLE_CACHE[device]
