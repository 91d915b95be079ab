"""SegUnet: shapes, the shared siamese encoder, configs, and that it learns a residual-visible anomaly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import AnomalySegLib
from AnomalySegLib.networks.seg_unet import SegUnet, SegUnetSpec

CONFIGS = Path(AnomalySegLib.__file__).parent / "configs"


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "name, channels",
    [("seg_paper", (64, 128, 256, 512)), ("seg_cpu", (16, 32, 64, 128)), ("seg_tiny", (8, 16, 32))],
)
def test_configs_build_networks_of_the_stated_size(name, channels):
    config = SegUnetSpec.from_dict(json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))["model"])
    assert config.channels == channels
    network = SegUnet(config)
    logits = network(torch.rand(2, 1, 96, 96), torch.rand(2, 1, 96, 96))
    assert logits.shape == (2, 1, 96, 96)
    assert network.encoder[-1][0].conv.out_channels == channels[-1]


def test_siamese_encoder_is_shared_and_both_inputs_matter():
    residual = SegUnet(SegUnetSpec(depth=3, base_channels=8))
    input_only = SegUnet(SegUnetSpec(depth=3, base_channels=8, inputs="input"))
    # One encoder serves residual and input: the same encoder size as the single-input network.
    assert _parameters(residual.encoder) == _parameters(input_only.encoder)
    assert _parameters(residual.decoder) > _parameters(input_only.decoder)  # concatenated features
    torch.manual_seed(0)
    images = torch.rand(2, 1, 32, 32)
    reconstructions = torch.rand(2, 1, 32, 32)
    base = residual(images, reconstructions)
    assert not torch.allclose(base, residual(images, reconstructions * 0.5))
    assert not torch.allclose(base, residual(images * 0.5, reconstructions * 0.5))  # same residual, other input
    # The input-only variant ignores the reconstruction.
    torch.testing.assert_close(input_only(images, reconstructions), input_only(images, None))
    probabilities = residual.probabilities(images, reconstructions)
    assert probabilities.min() >= 0 and probabilities.max() <= 1


def test_bad_inputs_are_refused():
    network = SegUnet(SegUnetSpec(depth=3, base_channels=8))
    with pytest.raises(ValueError, match="divisible by 4"):
        network(torch.rand(1, 1, 30, 32), torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match="needs the reconstructions"):
        network(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"unknown SegUnet spec field\(s\): widht"):
        SegUnetSpec.from_dict({"depth": 3, "widht": 8})
    with pytest.raises(ValueError, match="inputs must be"):
        SegUnetSpec(inputs="residual")


@pytest.mark.slow  # trains a SegUnet
def test_learns_an_anomaly_visible_only_in_the_residual():
    """Squares that differ between x and x̂ are anomalies; squares present in both are not."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = 0.3 + 0.1 * torch.rand(size, 1, 32, 32, generator=generator)
        reconstructions = images.clone()
        corners = torch.randint(0, 24, (size, 2, 2), generator=generator)
        for index in range(size):
            (ay, ax), (by, bx) = corners[index].tolist()
            images[index, :, ay : ay + 8, ax : ax + 8] = 0.9  # anomaly: not reconstructed
            images[index, :, by : by + 8, bx : bx + 8] = 0.9  # normal bright structure: reconstructed
            reconstructions[index, :, by : by + 8, bx : bx + 8] = 0.9
        labels = (images - reconstructions).abs().gt(0.1).float()
        return images, reconstructions, labels

    network = SegUnet(SegUnetSpec(depth=3, base_channels=8))
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(80):
        images, reconstructions, labels = batch(8)
        loss = loss_fn(network(images, reconstructions), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    images, reconstructions, labels = batch(16)
    with torch.no_grad():
        predicted = network.probabilities(images, reconstructions) > 0.5
    dice = 2 * (predicted & labels.bool()).sum() / (predicted.sum() + labels.sum())
    assert dice > 0.8
