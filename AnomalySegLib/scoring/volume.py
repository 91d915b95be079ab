"""Scoring a whole model-space volume: Stage I reconstruction, SegUnet probability, anomaly score.

:class:`AnomalyScorer` holds the networks once (the authors' code reloaded Stage I for every test
volume) and scores volumes ``[Z, Y, X]`` slice-batched on its device. Calibration, evaluation and
inference share it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from AnomalySegLib.bundle import ModelBundle
from AnomalySegLib.device import autocast
from AnomalySegLib.diffusion.reconstruction import (
    Reconstructor,
    default_chunk_size,
    load_reconstructor,
    reconstruct_volume,
)
from AnomalySegLib.errors import ModelBundleError
from AnomalySegLib.networks.seg_unet import SegUnet, SegUnetSpec
from AnomalySegLib.scoring.anomaly_score import ScoringSpec, combined_score, reconstruction_score, scoring_mask

log = logging.getLogger(__name__)

SEG_COMPONENT = "seg"
SCORING_SECTION = "scoring"
#: Slices per SegUnet pass: the CPU-sized network needs ~0.1 GB per 16 slices of 96×96.
DEFAULT_SEG_CHUNK = 16


@dataclass
class VolumeScores:
    """Everything computed for one volume, numpy ``[Z, Y, X]`` float32 (mask bool).

    Attributes:
        reconstruction: pseudo-healthy x̂ (mean over the noise levels).
        reconstruction_term: x̃ = median((1 − SSIM) · mask) (non-zero only in and next to the mask).
        segmentation_probability: ŷ averaged over the noise levels (``None`` without a SegUnet).
        anomaly_score: AS, zero outside the mask.
        mask: the brain mask used (after the optional erosion).
        timings_s: wall time of each step, seconds ("reconstruction", "segmentation_network", "scoring").
    """

    reconstruction: np.ndarray
    reconstruction_term: np.ndarray
    segmentation_probability: np.ndarray | None
    anomaly_score: np.ndarray
    mask: np.ndarray
    timings_s: dict[str, float] = field(default_factory=dict)


def load_seg_network(bundle: ModelBundle) -> SegUnet:
    """The SegUnet of ``bundle``'s ``"seg"`` component, weights loaded, in eval mode."""
    component = bundle.component(SEG_COMPONENT)
    where = bundle.path if bundle.path is not None else "<unsaved bundle>"
    try:
        network = SegUnet(SegUnetSpec.from_dict(component.architecture))
        network.load_state_dict(component.state_dict, strict=True)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ModelBundleError(where, f"invalid 'seg' component ({error})") from error
    return network.eval()


class AnomalyScorer:
    """Stage I + (optionally) Stage II + scoring, ready to score volumes.

    Args:
        reconstructor: the frozen Stage I model (defines the device and precision).
        seg_network: the SegUnet, or ``None`` for Stage-I-only scoring (AS = x̃).
        config: scoring settings (β, SSIM σ, median kernel, post-processing).
        seg_chunk_size: rows (slice × noise level) per SegUnet pass; rows of different noise levels share
            a pass, so on a GPU all of a volume's rows fit in one (e.g. 150 for 50 slices × 3 levels).
    """

    def __init__(
        self, reconstructor: Reconstructor, seg_network: SegUnet | None, config: ScoringSpec = ScoringSpec(),
        seg_chunk_size: int = DEFAULT_SEG_CHUNK,
    ) -> None:
        self.reconstructor = reconstructor
        self.device = reconstructor.device
        self.seg_network = None if seg_network is None else seg_network.to(self.device).eval()
        self.config = config
        self.seg_chunk_size = max(1, int(seg_chunk_size))

    @classmethod
    def from_bundle(
        cls, bundle: ModelBundle, device: torch.device | str = "auto", precision: str = "auto", use_seg: bool = True
    ) -> "AnomalyScorer":
        """Build from a bundle; ``use_seg=False`` (or a bundle without ``"seg"``) scores with Stage I only."""
        reconstructor = load_reconstructor(bundle, device, precision)
        has_seg = use_seg and SEG_COMPONENT in bundle.components
        seg_network = load_seg_network(bundle) if has_seg else None
        config = ScoringSpec.from_dict(bundle.section(SCORING_SECTION))
        return cls(reconstructor, seg_network, config)

    @torch.no_grad()
    def score(
        self,
        image: np.ndarray,
        brain_mask: np.ndarray,
        seed: int = 0,
        chunk_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        stage_started: Callable[[str], None] | None = None,
    ) -> VolumeScores:
        """Score one volume.

        Args:
            image: ``[Z, Y, X]`` float in [0, 1] on the model grid.
            brain_mask: ``[Z, Y, X]`` bool.
            seed: seeds Stage I's noise (same seed, same scores).
            chunk_size: slices per Stage I pass (default: from the free memory).
            progress: ``progress(done, total)`` over Stage I passes.
            stage_started: called with ``"segment"`` before the Stage II SegUnet runs and with
                ``"score"`` before the anomaly score is computed.
        """
        timings: dict[str, float] = {}
        start = time.perf_counter()
        image = np.asarray(image, dtype=np.float32)
        mask = scoring_mask(np.asarray(brain_mask, dtype=bool), self.config)
        recon = reconstruct_volume(self.reconstructor, image, seed=seed, chunk_size=chunk_size, progress=progress)
        image_t = torch.from_numpy(image).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        timings["reconstruction"] = time.perf_counter() - start
        probability = None
        if self.seg_network is not None:
            if stage_started is not None:
                stage_started("segment")
            start = time.perf_counter()
            probability = self._segmentation_probability(image_t, torch.from_numpy(recon.per_level))
            timings["segmentation_network"] = time.perf_counter() - start
        if stage_started is not None:
            stage_started("score")
        start = time.perf_counter()
        term = reconstruction_score(image_t, torch.from_numpy(recon.mean).to(self.device), mask_t, self.config)
        score = combined_score(term, probability, mask_t, self.config)
        timings["scoring"] = time.perf_counter() - start
        return VolumeScores(
            reconstruction=recon.mean,
            reconstruction_term=term.cpu().numpy(),
            segmentation_probability=None if probability is None else probability.cpu().numpy(),
            anomaly_score=score.cpu().numpy(),
            mask=mask,
            timings_s=timings,
        )

    def _segmentation_probability(self, image: torch.Tensor, per_level: torch.Tensor) -> torch.Tensor:
        """ŷ ``[Z, Y, X]``: the SegUnet's probability for each noise level's x̂, averaged over levels."""
        network = self.seg_network
        levels = per_level if network.uses_residual else per_level[:1]  # the input-only net ignores x̂
        depth = image.shape[0]
        reconstructions = levels.reshape(-1, 1, *levels.shape[-2:])  # row = level * depth + slice
        total = torch.zeros_like(image[:, None])
        for start in range(0, reconstructions.shape[0], self.seg_chunk_size):
            rows = torch.arange(start, min(start + self.seg_chunk_size, reconstructions.shape[0]))
            slices = rows % depth
            with autocast(self.device, self.reconstructor.autocast_dtype):
                logits = network(image[slices.to(self.device), None], reconstructions[rows].to(self.device))
            total.index_add_(0, slices.to(self.device), torch.sigmoid(logits.float()))
        return (total / len(levels))[:, 0]


def score_halving_on_oom(
    scorer: AnomalyScorer,
    image: np.ndarray,
    brain_mask: np.ndarray,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    stage_started: Callable[[str], None] | None = None,
) -> tuple[VolumeScores, int | None]:
    """:meth:`AnomalyScorer.score`, retried with half as many slices per Stage I pass after each
    out-of-memory error (GPU); the seed makes every retry give the same scores.

    Returns:
        the scores and the chunk size that worked (``None``: the default from the free memory).

    Raises:
        torch.OutOfMemoryError: even one slice per pass does not fit.
    """
    while True:
        try:
            scores = scorer.score(image, brain_mask, seed=seed, chunk_size=chunk_size, progress=progress,
                                  stage_started=stage_started)
            return scores, chunk_size
        except torch.OutOfMemoryError:
            current = chunk_size or default_chunk_size(scorer.reconstructor)
            if current <= 1:
                raise
            chunk_size = max(1, current // 2)
            log.warning("out of memory on %s: retrying with %d slices per pass", scorer.device, chunk_size)
            if scorer.device.type == "cuda":
                torch.cuda.empty_cache()
