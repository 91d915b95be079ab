"""The noise that corrupts slices in the forward diffusion process: simplex (default), the authors'
shared 2D simplex, or Gaussian.

Both simplex kinds follow AnoDDPM (Wyatt et al. 2022): a sum of octaves of gradient noise sampled on the
pixel grid, the k-th octave at coordinates ``pixel / (frequency / 2**k)`` with amplitude
``persistence**k``; the sum is not rescaled (as in the authors' code). They differ in distribution and
in sharing:

- ``"simplex"`` (ours, the default model's): each sample gets its own field, a 2D section of 3D
  simplex noise (Gustavson, "Simplex noise demystified", 2005) at a random offset per octave. Its
  standard deviation over a 96 × 96 field is about 0.67.
- ``"simplex2d_shared"`` (the paper's code, ``src/utils/generate_noise.py`` of
  FinnBehrendt/Supervised-Anomaly-Detection-with-Diffusion-Models): 2D OpenSimplex noise (K. Spencer's
  algorithm, as in the ``opensimplex`` package) with a new random lattice permutation per call and
  every octave anchored at the lattice origin; **one field per call, repeated over the whole batch**.
  Training therefore noises every slice of a batch with the same field, and at test time every slice
  of a volume shares one field per noise level (``reconstruct_volume`` draws a level's noise for all
  slices in one call). Its standard deviation over a 96 × 96 field is about 0.53, so the two kinds are
  **not** the same distribution: the same timestep destroys more of the image under ``"simplex"``.

Both are vectorised torch on the tensor's device, written here because neither torch nor MONAI offers
simplex noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from AnomalySegLib.spec_io import JsonSpec

NOISE_KINDS = ("simplex", "simplex2d_shared", "gaussian")

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
        kind: ``"simplex"``, ``"simplex2d_shared"`` (the authors' noise, see the module docstring) or
            ``"gaussian"``.
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
    the same seed gives the same noise on every device and for any chunking of a batch. With
    ``"simplex2d_shared"`` all ``B × C`` fields are one and the same field.
    """
    if spec.kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
    batch, channels, height, width = shape
    if spec.kind == "simplex2d_shared":
        permutation = torch.randperm(_LATTICE_PERIOD, generator=generator)
        field = opensimplex2_octaves((height, width), permutation.to(device), spec.octaves, spec.persistence,
                                     spec.frequency)
        return field.expand(batch, channels, height, width).contiguous()
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


def opensimplex2_octaves(
    size: tuple[int, int], permutation: torch.Tensor, octaves: int, persistence: float, frequency: float
) -> torch.Tensor:
    """One fractal 2D OpenSimplex field ``[H, W]``: ``Σ_k persistence**k · noise2(col / f_k, row / f_k)``
    with ``f_k = frequency / 2**k``, all octaves on the lattice given by ``permutation`` ``[256]``."""
    height, width = size
    device = permutation.device
    rows = torch.arange(height, device=device, dtype=torch.float64).view(height, 1).expand(height, width)
    cols = torch.arange(width, device=device, dtype=torch.float64).view(1, width).expand(height, width)
    noise = torch.zeros((height, width), device=device, dtype=torch.float64)
    amplitude = 1.0
    for _ in range(octaves):
        noise += amplitude * opensimplex2(cols / frequency, rows / frequency, permutation)
        frequency /= 2
        amplitude *= persistence
    return noise.float()


# 2D OpenSimplex (K. Spencer, 2014; public domain): a triangular lattice obtained by stretching the
# square one; each point sums the attenuated gradient ramps of the 3 vertices of its triangle and of
# one extra vertex. Gradients point to the vertices of an octagon; the result is divided by 47.
_STRETCH_2D = (1.0 / 3.0**0.5 - 1.0) / 2.0
_SQUISH_2D = (3.0**0.5 - 1.0) / 2.0
_NORM_2D = 47.0
_GRADIENTS_2D = ((5, 2), (2, 5), (-5, 2), (-2, 5), (5, -2), (2, -5), (-5, -2), (-2, -5))


def opensimplex2(x: torch.Tensor, y: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """2D OpenSimplex noise in about [-1, 1] at points ``(x, y)`` (same-shape float64 tensors)."""
    gradients = torch.tensor(_GRADIENTS_2D, dtype=x.dtype, device=x.device)
    stretch = (x + y) * _STRETCH_2D
    xsb, ysb = torch.floor(x + stretch), torch.floor(y + stretch)
    squish = (xsb + ysb) * _SQUISH_2D
    dx0, dy0 = x - (xsb + squish), y - (ysb + squish)
    xins, yins = x + stretch - xsb, y + stretch - ysb
    in_sum = xins + yins

    def ramp(xv, yv, dx, dy):
        attenuation = torch.clamp(2.0 - dx * dx - dy * dy, min=0.0) ** 4
        hashed = permutation[(permutation[xv.long() & 255] + yv.long()) & 255]
        gradient = gradients[(hashed & 14) // 2]
        return attenuation * (gradient[..., 0] * dx + gradient[..., 1] * dy)

    value = ramp(xsb + 1, ysb, dx0 - 1 - _SQUISH_2D, dy0 - _SQUISH_2D)
    value += ramp(xsb, ysb + 1, dx0 - _SQUISH_2D, dy0 - 1 - _SQUISH_2D)

    # The fourth (extra) vertex and the base vertex, by which triangle holds the point.
    lower = in_sum <= 1
    x_larger = xins > yins
    zins_low, zins_high = 1 - in_sum, 2 - in_sum
    low_near_origin = (zins_low > xins) | (zins_low > yins)
    high_near_far = (zins_high < xins) | (zins_high < yins)
    two_squish = 2 * _SQUISH_2D
    # Lower triangle: (0, 0) is a closest vertex → extra vertex (1, -1) or (-1, 1); else (1, 1).
    lx = torch.where(low_near_origin, torch.where(x_larger, xsb + 1, xsb - 1), xsb + 1)
    ly = torch.where(low_near_origin, torch.where(x_larger, ysb - 1, ysb + 1), ysb + 1)
    ldx = torch.where(low_near_origin, torch.where(x_larger, dx0 - 1, dx0 + 1), dx0 - 1 - two_squish)
    ldy = torch.where(low_near_origin, torch.where(x_larger, dy0 + 1, dy0 - 1), dy0 - 1 - two_squish)
    # Upper triangle (base vertex (1, 1)): (0, 0) among the closest → extra (2, 0) or (0, 2); else (0, 0).
    ux = torch.where(high_near_far, torch.where(x_larger, xsb + 2, xsb), xsb)
    uy = torch.where(high_near_far, torch.where(x_larger, ysb, ysb + 2), ysb)
    udx = torch.where(high_near_far, torch.where(x_larger, dx0 - 2 - two_squish, dx0 - two_squish), dx0)
    udy = torch.where(high_near_far, torch.where(x_larger, dy0 - two_squish, dy0 - 2 - two_squish), dy0)
    ext_x, ext_y = torch.where(lower, lx, ux), torch.where(lower, ly, uy)
    ext_dx, ext_dy = torch.where(lower, ldx, udx), torch.where(lower, ldy, udy)
    base_x, base_y = torch.where(lower, xsb, xsb + 1), torch.where(lower, ysb, ysb + 1)
    base_dx = torch.where(lower, dx0, dx0 - 1 - two_squish)
    base_dy = torch.where(lower, dy0, dy0 - 1 - two_squish)
    value += ramp(base_x, base_y, base_dx, base_dy)
    value += ramp(ext_x, ext_y, ext_dx, ext_dy)
    return value / _NORM_2D


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
