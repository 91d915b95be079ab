"""Exponential moving average of model weights (torch's ``AveragedModel`` with an EMA rule)."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (parameters and buffers, e.g. batch-norm statistics), in eval mode.

    ``ema.update_parameters(model)`` after each optimizer step; ``ema.module`` is the averaged network.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), not {decay}")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.eval()
    for parameter in ema.parameters():
        parameter.requires_grad_(False)
    return ema
