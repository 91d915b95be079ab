"""Image encoders that turn a clean slice into the conditioning vector of the cDDPM.

MONAI's ResNet family, 2D, one input channel, the classification head sized to the conditioning
dimension. ``{"name": "resnet50"}`` is the paper's encoder; ``{"name": "resnet", "block": "basic",
"layers": [1, 1, 1, 1], "block_inplanes": [16, 32, 64, 128]}`` a small one for CPU-sized models.
"""

from __future__ import annotations

from monai.networks.nets import resnet
from torch import nn

NAMED_RESNETS = {
    "resnet10": resnet.resnet10,
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
}


def build_encoder(config: dict, output_dim: int) -> nn.Module:
    """A 2D encoder mapping ``[B, 1, H, W]`` to ``[B, output_dim]``.

    Args:
        config: ``{"name": one of NAMED_RESNETS}`` or ``{"name": "resnet", "block": "basic"|"bottleneck",
            "layers": [..4 ints..], "block_inplanes": [..4 ints..]}``; optional ``"norm"`` (default
            ``"batch"``, as MONAI's ResNet).
        output_dim: size of the feature vector (paper: 512).

    Raises:
        ValueError: unknown encoder name or missing fields.
    """
    options = dict(config)
    name = options.pop("name", None)
    common = dict(spatial_dims=2, n_input_channels=1, num_classes=output_dim, norm=options.pop("norm", "batch"))
    if name in NAMED_RESNETS:
        if options:
            raise ValueError(f"encoder {name!r} takes no options besides 'norm', got {sorted(options)}")
        return NAMED_RESNETS[name](**common)
    if name == "resnet":
        missing = {"block", "layers", "block_inplanes"} - options.keys()
        if missing:
            raise ValueError(f"encoder 'resnet' needs {sorted(missing)}")
        return resnet.ResNet(
            block=options.pop("block"),
            layers=list(options.pop("layers")),
            block_inplanes=list(options.pop("block_inplanes")),
            **options,
            **common,
        )
    raise ValueError(f"unknown encoder {name!r}; use one of {sorted(NAMED_RESNETS) + ['resnet']}")
