"""Training augmentation of healthy slices, as in the paper: gamma (p .5), bias field (p .25),
blur (p .25), ghosting (p .5).

Gamma, bias field and blur are MONAI's random transforms, re-seeded from the step's generator for every
batch (exact resume). Ghosting is our own few lines of k-space arithmetic in torch: MONAI has no ghosting
transform (``RandKSpaceSpikeNoise`` makes spikes, not ghosts), and TorchIO's ``RandomGhosting`` would add
a dependency that draws from torch's global RNG. As TorchIO does, we attenuate every n-th line of k-space
along a random axis, leaving the centre of k-space untouched, which repeats faint copies of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Compose, RandAdjustContrast, RandBiasField, RandGaussianSmooth

from AnomalySegLib.spec_io import JsonSpec


@dataclass(frozen=True)
class AugmentationSpec(JsonSpec):
    """Probabilities and ranges (TorchIO's defaults, which the authors' code uses, where they apply)."""

    SPEC_NAME = "augmentation spec"

    gamma_p: float = 0.5
    gamma_range: tuple[float, float] = (0.74, 1.35)  # exp(±0.3)
    bias_field_p: float = 0.25
    bias_field_coefficients: tuple[float, float] = (-0.5, 0.5)
    bias_field_degree: int = 3
    blur_p: float = 0.25
    blur_sigma_pixels: tuple[float, float] = (0.25, 1.0)
    ghosting_p: float = 0.5
    ghosts_range: tuple[int, int] = (4, 10)
    ghost_intensity_range: tuple[float, float] = (0.5, 1.0)
    ghost_restore_fraction: float = 0.02



class SliceAugmenter:
    """Augments a batch ``[B, 1, H, W]`` in [0, 1]; returns the same shape, clipped to [0, 1]."""

    def __init__(self, spec: AugmentationSpec = AugmentationSpec()) -> None:
        self.spec = spec
        self.intensity = Compose(
            [
                RandAdjustContrast(prob=spec.gamma_p, gamma=spec.gamma_range),
                RandBiasField(
                    prob=spec.bias_field_p, degree=spec.bias_field_degree, coeff_range=spec.bias_field_coefficients
                ),
                RandGaussianSmooth(
                    prob=spec.blur_p, sigma_x=spec.blur_sigma_pixels, sigma_y=spec.blur_sigma_pixels
                ),
            ]
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        self.intensity.set_random_state(seed=seed)
        augmented = torch.stack([_plain(self.intensity(image)) for image in images])
        augmented = ghosting(augmented, self.spec, generator)
        return augmented.clamp(0.0, 1.0)


def _plain(image) -> torch.Tensor:
    """MONAI returns ``MetaTensor``s; training wants plain float tensors."""
    image = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    return image.float()


def ghosting(images: torch.Tensor, spec: AugmentationSpec, generator: torch.Generator) -> torch.Tensor:
    """MRI ghosting on a random subset (probability ``spec.ghosting_p``) of ``images`` ``[B, 1, H, W]``."""
    output = images.clone()
    chosen = torch.rand(images.shape[0], generator=generator) < spec.ghosting_p
    for index in torch.nonzero(chosen).flatten().tolist():
        axis = int(torch.randint(0, 2, (1,), generator=generator)) - 2  # -2: rows, -1: columns
        ghosts = int(torch.randint(spec.ghosts_range[0], spec.ghosts_range[1] + 1, (1,), generator=generator))
        low, high = spec.ghost_intensity_range
        intensity = low + (high - low) * float(torch.rand(1, generator=generator))
        output[index] = _ghost(images[index], axis, ghosts, intensity, spec.ghost_restore_fraction)
    return output


def _ghost(image: torch.Tensor, axis: int, ghosts: int, intensity: float, restore: float) -> torch.Tensor:
    spectrum = torch.fft.fftshift(torch.fft.fft2(image), dim=(-2, -1))
    length = image.shape[axis]
    lines = torch.arange(length)
    attenuated = lines % ghosts == 0
    centre, keep = length // 2, max(1, int(round(restore * length / 2)))
    attenuated[centre - keep : centre + keep + 1] = False
    factor = torch.ones(length)
    factor[attenuated] = 1.0 - intensity
    shape = [1] * image.ndim
    shape[axis] = length
    spectrum = spectrum * factor.view(shape).to(spectrum.dtype)
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).abs().to(image.dtype)


def erode_mask_edge(images: torch.Tensor, masks: torch.Tensor, probability: float, max_pixels: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the brain mask's edge inward on a random share of slices and zero the image outside it.

    A test scan's mask (the template's, mapped through the registration) cuts the brain elsewhere than any
    training mask did; eroding by a random 1…``max_pixels`` pixels (square structuring element) keeps the
    cut edge from becoming a cue.

    Args:
        images, masks: ``[B, 1, H, W]``; images 0 outside the mask, masks float 0/1.
        probability: chance per slice of being eroded.

    Returns:
        new ``(images, masks)`` tensors (the inputs are left unchanged).
    """
    count = images.shape[0]
    chosen = torch.rand(count, generator=generator) < probability
    radii = torch.randint(1, max_pixels + 1, (count,), generator=generator)
    images, masks = images.clone(), masks.clone()
    for radius in radii[chosen].unique().tolist():
        index = chosen & (radii == radius)
        # erosion of a 0/1 mask = 1 − dilation of its complement (max pooling)
        eroded = 1.0 - F.max_pool2d(1.0 - masks[index], 2 * radius + 1, stride=1, padding=radius)
        masks[index] = eroded
        images[index] = images[index] * eroded
    return images, masks
