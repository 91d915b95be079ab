"""The configuration of Stage II training (``AnomalySegLib/configs/seg_*.json``), parsed and checked.

::

    {"model": <SegUnetSpec>, "anomalies": <DraemAnomalyGenerator settings>,
     "lesions": {"fraction": <share of synthetic slices>, <LesionAnomalyGenerator settings>} (optional),
     "tumours": {"fraction": <share of synthetic slices>, <TumourAnomalyGenerator settings>,
                 "appearance": <TumourAppearance settings>} (optional),
     "scoring": <ScoringSpec>,
     "training": {"batch_size", "learning_rate", "optimizer": "adam"|"adamw", "weight_decay", "max_steps",
                  "ema_decay", "grad_clip", "precision", "checkpoint_every", "validate_every", "log_every",
                  "seed", "min_brain_fraction", "dice_weight", "synthetic_fraction", "timestep_range",
                  "validation_cases", "validation_fraction", "validation_max_slices", "augmentation",
                  "mask_erosion_p", "mask_erosion_max_pixels"}}
"""

from __future__ import annotations

from dataclasses import dataclass

from AnomalySegLib.anomalies import (AnomalyGenerator, AnomalyMixture, DraemAnomalyGenerator,
                                     LesionAnomalyGenerator, TumourAnomalyGenerator, TumourAppearance)
from AnomalySegLib.errors import InputError
from AnomalySegLib.networks.seg_unet import SegUnetSpec
from AnomalySegLib.scoring.anomaly_score import ScoringSpec
from AnomalySegLib.spec_io import SpecError, check_keys, spec_from_dict
from AnomalySegLib.training.spec import TrainingSpec


@dataclass(frozen=True)
class SegTrainingSpec(TrainingSpec):
    """The ``"training"`` section of a Stage II configuration (see the module docstring).

    Attributes:
        dice_weight: weight of a soft Dice loss added to BCE (paper: 0, BCE only).
        synthetic_fraction: share of each batch made of healthy slices with synthetic anomalies when
            both healthy and labelled data are given (1 with healthy data only, 0 with labels only).
        timestep_range: Stage I noise levels ``[low, high)`` drawn per slice (paper code: [0, T)).
        validation_cases: healthy cases held out for validation (with seeded synthetic anomalies).
        validation_fraction: share of labelled cases held out (at least one when there are two or more).
        validation_max_slices: validation slices per source (spread evenly over the held-out cases).
        mask_erosion_p: share of healthy slices whose brain-mask edge is moved inward by 1 to
            ``mask_erosion_max_pixels`` pixels (image zeroed outside) before the synthetic anomaly, so that
            where the mask cuts the brain is no cue (paper: 0; see :func:`~.augment.erode_mask_edge`).
    """

    optimizer: str = "adam"
    log_every: int = 10
    dice_weight: float = 0.0
    synthetic_fraction: float = 1.0
    timestep_range: tuple[int, int] = (0, 1000)
    validation_fraction: float = 0.1
    mask_erosion_p: float = 0.0
    mask_erosion_max_pixels: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.synthetic_fraction <= 1.0:
            raise ValueError(f"synthetic_fraction must be in [0, 1], got {self.synthetic_fraction}")
        if not 0.0 <= self.mask_erosion_p <= 1.0 or self.mask_erosion_max_pixels < 1:
            raise ValueError("mask_erosion_p must be in [0, 1] and mask_erosion_max_pixels ≥ 1, got "
                             f"{self.mask_erosion_p}, {self.mask_erosion_max_pixels}")
        low, high = self.timestep_range
        if not 0 <= low < high:
            raise ValueError(f"timestep_range must be [low, high) with 0 <= low < high, got {self.timestep_range}")


@dataclass(frozen=True)
class SegStageSpec:
    """A parsed Stage II configuration."""

    network: SegUnetSpec
    training: SegTrainingSpec
    anomalies: AnomalyGenerator
    scoring: ScoringSpec


def _tuples(settings: dict) -> dict:
    """JSON lists → tuples (the generators' ranges are tuples)."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}


def _fraction(section: str, settings: dict) -> float:
    """Pop and check a section's ``"fraction"`` (share of the synthetic slices)."""
    fraction = float(settings.pop("fraction"))
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{section}.fraction must be in [0, 1], got {fraction}")
    return fraction


def anomaly_generator(config: dict) -> AnomalyGenerator:
    """DRAEM anomalies (``"anomalies"``), mixed with lesion-like blobs (``"lesions"``) and tumour-like
    anomalies (``"tumours"``) when given.

    ``"lesions": {"fraction": f, ...}`` gives a share ``f`` of the synthetic slices a
    :class:`LesionAnomalyGenerator` blob instead of a DRAEM texture, ``"tumours"`` likewise a
    :class:`TumourAnomalyGenerator` tumour (its ``"appearance"`` holds :class:`TumourAppearance`
    settings); DRAEM keeps the rest.
    """
    draem = DraemAnomalyGenerator(**_tuples(config.get("anomalies", {})))
    if "lesions" not in config and "tumours" not in config:
        return draem
    generators, weights = [draem], [1.0]
    if "lesions" in config:
        lesions = _tuples(config["lesions"])
        weights.append(_fraction("lesions", lesions))
        generators.append(LesionAnomalyGenerator(**lesions))
    if "tumours" in config:
        tumours = _tuples(config["tumours"])
        weights.append(_fraction("tumours", tumours))
        appearance = TumourAppearance(**_tuples(tumours.pop("appearance", {})))
        generators.append(TumourAnomalyGenerator(**tumours, appearance=appearance))
    weights[0] = 1.0 - sum(weights[1:])
    if weights[0] < 0:
        raise ValueError(f"the fractions of lesions and tumours add up to {sum(weights[1:])}, more than 1")
    return AnomalyMixture(tuple(generators), tuple(weights))


#: Top-level keys of a Stage II configuration (``name`` and ``description`` are for people).
CONFIG_KEYS = ("name", "description", "model", "training", "anomalies", "lesions", "tumours", "scoring")


def parse_seg_config(config: dict) -> SegStageSpec:
    """Parse a configuration dict; :class:`InputError` naming the config and the problem."""
    where = config.get("name", "<config>")
    try:
        check_keys(config, CONFIG_KEYS, "Stage II configuration key")
        return SegStageSpec(
            network=SegUnetSpec.from_dict(config["model"]),
            training=SegTrainingSpec.from_dict(config.get("training", {})),
            anomalies=anomaly_generator(config),
            # In a configuration the section holds only these settings (in a bundle also thresholds).
            scoring=spec_from_dict(ScoringSpec, config.get("scoring", {}), "scoring section"),
        )
    except SpecError as error:
        raise InputError(where, f"invalid Stage II configuration: {error}") from error
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(where, f"invalid Stage II configuration ({error!r})") from error
