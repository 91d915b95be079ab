"""The Stage I denoiser: MONAI's ``DiffusionModelUNet``, optionally conditioned on an encoded image.

Conditioning (cDDPM, Behrendt et al.): the encoder's feature vector of the *clean* input slice is
projected to the U-Net's time-embedding width and added to the time embedding, so every residual block
sees it. MONAI's U-Net already adds a class embedding to the time embedding when ``num_class_embeds`` is
set (``emb = time_embed(t) + class_embedding(class_labels)``, MONAI 1.6 ``DiffusionModelUNet.forward``);
we replace that ``nn.Embedding`` by an ``nn.Linear(cond_dim, time_embed_dim)`` and pass the feature
vector as ``class_labels``. This is the only departure from MONAI's network; nothing is rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from AnomalySegLib.networks.encoder import build_encoder
from AnomalySegLib.spec_io import JsonSpec

RECON_KINDS = ("cddpm", "ddpm", "pddpm")


@dataclass(frozen=True)
class UNetSpec(JsonSpec):
    """Width and depth of the denoising U-Net (paper: channels (128, 256, 256), 3 res blocks).

    Attention is in the middle block only (MONAI always puts attention there); ``attention_levels``
    adds it to further levels.
    """

    SPEC_NAME = "Stage I U-Net spec"

    channels: tuple[int, ...] = (128, 256, 256)
    num_res_blocks: int = 3
    attention_levels: tuple[bool, ...] | None = None
    norm_num_groups: int = 32
    num_head_channels: int = 64

    def __post_init__(self) -> None:
        levels = self.attention_levels or tuple(False for _ in self.channels)
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "attention_levels", tuple(bool(v) for v in levels))


@dataclass(frozen=True)
class DenoiserSpec(JsonSpec):
    """Network part of a Stage I model: ``kind`` ``"cddpm"`` (conditioned), ``"ddpm"``, ``"pddpm"``.

    ``encoder`` and ``cond_dim`` are used by ``"cddpm"`` only (see :func:`build_encoder`); ``encoder``
    is free-form (the settings of :func:`build_encoder`).
    """

    SPEC_NAME = "Stage I denoiser spec"

    kind: str = "cddpm"
    unet: UNetSpec = field(default_factory=UNetSpec)
    encoder: dict | None = field(default_factory=lambda: {"name": "resnet50"})
    cond_dim: int = 512

    def __post_init__(self) -> None:
        if self.kind not in RECON_KINDS:
            raise ValueError(f"model kind must be one of {RECON_KINDS}, not {self.kind!r}")
        if self.kind == "cddpm" and not self.encoder:
            raise ValueError("a conditioned DDPM ('cddpm') needs an 'encoder'")
        if not self.conditioned:
            object.__setattr__(self, "encoder", None)

    @property
    def conditioned(self) -> bool:
        return self.kind == "cddpm"


class Denoiser(nn.Module):
    """Predicts the clean slice from a noised one.

    ``forward(x_t [B, 1, H, W], timesteps [B] long, condition_image [B, 1, H, W] | None) -> [B, 1, H, W]``,
    all images in the model's intensity scale ([-1, 1] for clean slices). ``condition_image`` (the clean
    slice) is required for ``"cddpm"`` and ignored otherwise.
    """

    def __init__(self, spec: DenoiserSpec) -> None:
        super().__init__()
        self.spec = spec
        unet = spec.unet
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=unet.channels,
            num_res_blocks=unet.num_res_blocks,
            attention_levels=unet.attention_levels,
            norm_num_groups=unet.norm_num_groups,
            num_head_channels=unet.num_head_channels,
            num_class_embeds=1 if spec.conditioned else None,
        )
        self.encoder: nn.Module | None = None
        if spec.conditioned:
            time_embed_dim = self.unet.time_embed[-1].out_features
            self.unet.class_embedding = nn.Linear(spec.cond_dim, time_embed_dim)
            self.encoder = build_encoder(spec.encoder, spec.cond_dim)

    def forward(
        self, x_t: torch.Tensor, timesteps: torch.Tensor, condition_image: torch.Tensor | None = None
    ) -> torch.Tensor:
        features = None
        if self.encoder is not None:
            if condition_image is None:
                raise ValueError("a conditioned denoiser needs the clean slice as condition_image")
            features = self.encoder(condition_image)
        return self.unet(x_t, timesteps, class_labels=features)
