"""Random axial slices of preprocessed volumes, for 2D training.

All volumes are held in memory (a 96×96×50 case is 1.8 MB, masks as booleans); a slice is eligible when enough of it is
brain. Draws come from the caller's generator, so a batch is a function of the step's seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from AnomalySegLib.errors import InputError
from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase


@dataclass
class SliceBatch:
    """``images`` ``[B, 1, H, W]`` in [0, 1]; ``masks`` and ``labels`` ``[B, 1, H, W]`` float 0/1
    (``labels`` zeros where a case has none); ``index`` ``[B, 2]`` (case number, slice number)."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor


class SliceSampler:
    """Draws random axial slices (``array[z]``) with at least ``min_brain_fraction`` of brain.

    Args:
        cases: preprocessed cases (all on the same grid).
        min_brain_fraction: fraction of the slice's pixels inside the brain mask.
    """

    def __init__(self, cases: Sequence[ModelSpaceCase], min_brain_fraction: float = 0.05) -> None:
        if not cases:
            raise ValueError("no cases to draw slices from")
        shapes = {case.image.shape for case in cases}
        if len(shapes) != 1:
            raise InputError(None, f"cases are on different grids {sorted(shapes)}; preprocess them alike")
        self.case_ids = [case.case_id for case in cases]
        self.images = torch.from_numpy(np.stack([case.image for case in cases]).astype(np.float32))
        self.masks = torch.from_numpy(np.stack([case.mask for case in cases]).astype(bool))
        self.labels = torch.from_numpy(
            np.stack([case.labels if case.labels is not None else np.zeros_like(case.mask) for case in cases])
        ).bool()
        brain_fraction = self.masks.float().mean(dim=(2, 3))  # [cases, Z]
        self.eligible = torch.nonzero(brain_fraction >= min_brain_fraction)  # [N, 2]
        if len(self.eligible) == 0:
            raise InputError(None, f"no slice has {min_brain_fraction:.0%} brain in cases {self.case_ids}")

    def __len__(self) -> int:
        return len(self.eligible)

    def sample(self, batch_size: int, generator: torch.Generator) -> SliceBatch:
        """``batch_size`` eligible slices drawn uniformly with replacement."""
        picks = self.eligible[torch.randint(0, len(self.eligible), (batch_size,), generator=generator)]
        return self.take(picks)

    def evenly_spaced(self, count: int) -> SliceBatch:
        """Up to ``count`` eligible slices spread evenly over all cases (a fixed validation set)."""
        chosen = torch.linspace(0, len(self) - 1, min(count, len(self))).round().long()
        return self.take(self.eligible[chosen])

    def take(self, index: torch.Tensor) -> SliceBatch:
        """The slices at ``index`` ``[B, 2]`` (case number, slice number)."""
        case, z = index[:, 0], index[:, 1]
        return SliceBatch(
            images=self.images[case, z].unsqueeze(1),
            masks=self.masks[case, z].unsqueeze(1).float(),
            labels=self.labels[case, z].unsqueeze(1).float(),
            index=index,
        )

