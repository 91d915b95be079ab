"""SegUnet: the Stage II segmentation network of SADM (after the DAE U-Net of Kascenas et al.).

The *residual* variant (SADMres) runs the signed residual ``x − x̂`` and the input ``x`` through the
same encoder (shared weights), concatenates the two feature maps at every level and decodes them
into one logit per pixel. The *input-only* variant (the paper's "U-Net only" ablation) encodes ``x``
alone. Blocks: 3×3 convolution → SiLU → group norm, twice per level; average-pool down-sampling;
transposed-convolution up-sampling; a 1×1 convolution to the logit.

Shapes: images ``[B, 1, H, W]`` with H and W divisible by ``2^(depth−1)`` (96×96 with depth 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from AnomalySegLib.spec_io import JsonSpec

SegInputs = Literal["residual_and_input", "input"]


@dataclass(frozen=True)
class SegUnetSpec(JsonSpec):
    """Architecture of a :class:`SegUnet` (stored in model bundles as a dict).

    Attributes:
        depth: resolution levels (paper: 4).
        base_channels: channels of the first level, doubled per level (paper: 64 → 64…512).
        inputs: ``"residual_and_input"`` (SADMres, siamese) or ``"input"`` (U-Net-only ablation).
    """

    SPEC_NAME = "SegUnet spec"

    depth: int = 4
    base_channels: int = 64
    inputs: SegInputs = "residual_and_input"

    def __post_init__(self) -> None:
        if self.depth < 1 or self.base_channels < 1:
            raise ValueError(f"depth and base_channels must be positive, got {self.depth}, {self.base_channels}")
        if self.inputs not in ("residual_and_input", "input"):
            raise ValueError(f"inputs must be 'residual_and_input' or 'input', got {self.inputs!r}")

    @property
    def channels(self) -> tuple[int, ...]:
        """Encoder channels per level, e.g. (64, 128, 256, 512)."""
        return tuple(self.base_channels * 2**level for level in range(self.depth))



def _groups(channels: int) -> int:
    """Group-norm groups as in the DAE U-Net: the median divisor of ``channels`` (64 → 8, 8 → 4)."""
    divisors = [d for d in range(1, channels + 1) if channels % d == 0]
    return divisors[len(divisors) // 2]


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two × (3×3 conv → SiLU → group norm), as in the DAE U-Net."""

    def conv(cin: int, cout: int) -> Convolution:
        norm = ("group", {"num_groups": _groups(cout)})
        return Convolution(2, cin, cout, kernel_size=3, adn_ordering="AN", act="SWISH", norm=norm)  # Swish = SiLU

    return nn.Sequential(conv(in_channels, out_channels), conv(out_channels, out_channels))


class _UpBlock(nn.Module):
    """Transposed-conv ×2 up-sampling, concatenation with the skip features, conv block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = _conv_block(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class SegUnet(nn.Module):
    """Anomaly segmentation U-Net; :meth:`forward` returns logits ``[B, 1, H, W]``."""

    def __init__(self, config: SegUnetSpec | None = None) -> None:
        super().__init__()
        self.config = config or SegUnetSpec()
        channels = self.config.channels
        # Siamese: features of residual and input are concatenated, doubling the decoder's width.
        width = 2 if self.config.inputs == "residual_and_input" else 1
        self.encoder = nn.ModuleList(
            _conv_block(cin, cout) for cin, cout in zip((1,) + channels[:-1], channels)
        )
        self.decoder = nn.ModuleList(
            _UpBlock(width * channels[level + 1], width * channels[level])
            for level in reversed(range(self.config.depth - 1))
        )
        self.head = nn.Conv2d(width * channels[0], 1, kernel_size=1)

    @property
    def uses_residual(self) -> bool:
        return self.config.inputs == "residual_and_input"

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level, block in enumerate(self.encoder):
            if level:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            features.append(x)
        return features

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor | None = None) -> torch.Tensor:
        """Anomaly logits.

        Args:
            images: ``[B, 1, H, W]`` the (possibly anomalous) input x.
            reconstructions: ``[B, 1, H, W]`` Stage I's pseudo-healthy x̂; required by the residual
                variant, ignored by the input-only one.

        Returns:
            ``[B, 1, H, W]`` logits (apply a sigmoid for probabilities).
        """
        factor = 2 ** (self.config.depth - 1)
        if images.shape[-1] % factor or images.shape[-2] % factor:
            raise ValueError(
                f"image size {tuple(images.shape[-2:])} must be divisible by {factor} (depth {self.config.depth})"
            )
        if self.uses_residual:
            if reconstructions is None:
                raise ValueError("the residual SegUnet needs the reconstructions")
            # One encoder pass over residual and input stacked on the batch axis (shared weights).
            both = self._encode(torch.cat([images - reconstructions, images], dim=0))
            features = [torch.cat(level.chunk(2, dim=0), dim=1) for level in both]
        else:
            features = self._encode(images)
        x = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            x = block(x, skip)
        return self.head(x)

    def probabilities(self, images: torch.Tensor, reconstructions: torch.Tensor | None = None) -> torch.Tensor:
        """``sigmoid(forward(...))``: anomaly probability ŷ in [0, 1], ``[B, 1, H, W]``."""
        return torch.sigmoid(self(images, reconstructions))
