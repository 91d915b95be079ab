"""The domain check: is this input a brain MRI the loaded model can score, and is it like its training data?

Each measure of :mod:`~AnomalySegLib.quality.measures` has a *refuse* range and a *warn* range:

- outside the refuse range the case is refused (:class:`~AnomalySegLib.errors.InputError`, one line
  saying which number and what brain MRI scores): noise, phantoms, CT, other body parts, an upside-down
  head, slices too thick or a field of view too small to be of use;
- outside the warn range (the range measured on the model's training and validation scans, widened
  by a margin, see :mod:`~AnomalySegLib.quality.reference`) the case is processed and carries a
  warning: a clinical reality the model was not trained or validated on (thick slices, partial
  coverage, a tilted head, another contrast).

The ranges come from the bundle's ``"domain"`` section of ``model.json``::

    "domain": {"version": 1, "limits": {"slice_thickness_mm": {"refuse": [null, 8.0], "warn": [null, 3.0]},
               ...}, "intensity_histogram": [32 numbers], "cases": {...}, "source": "..."}

A bundle without the section gets :data:`BUILTIN_LIMITS` (conservative: only the refusals, no
intensity comparison) and a one-time log line saying so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.errors import InputError, ModelBundleError
from AnomalySegLib.io.validation import validate_volume
from AnomalySegLib.preprocessing.pipeline import PreprocessedCase
from AnomalySegLib.quality.catalogue import HISTOGRAM_BINS, MEASURES
from AnomalySegLib.quality.measures import header_measures, model_space_measures

log = logging.getLogger(__name__)

DOMAIN_VERSION = 1
REFUSE = "refuse"
WARN = "warn"

Range = tuple[float | None, float | None]

#: Refusal limits that hold for any model of this engine, and the defaults of a bundle without a
#: "domain" section. Why each value: see the README section "What the model accepts".
BUILTIN_REFUSE: dict[str, Range] = {
    "slice_thickness_mm": (None, 8.0),
    "in_plane_spacing_mm": (None, 4.0),
    "neighbour_correlation": (0.5, None),
    "hounsfield_air_fraction": (None, 0.05),
    "registration_similarity": (0.15, None),
    "brain_volume_ml": (700.0, 2600.0),
    "fov_brain_fraction": (0.6, None),
    "head_tilt_deg": (None, 60.0),
}

#: What a refusal says before the numbers, per measure.
REFUSAL_VERDICT = {
    "slice_thickness_mm": "slices too thick for the model",
    "in_plane_spacing_mm": "voxels too coarse for the model",
    "neighbour_correlation": "does not look like an image of anatomy (noise?)",
    "hounsfield_air_fraction": "looks like a CT in Hounsfield units, not an MRI",
    "registration_similarity": "does not look like a brain MRI, or its header's orientation does not match the image",
    "brain_volume_ml": "does not look like a human brain MRI",
    "fov_brain_fraction": "too little of the brain in the field of view",
    "head_tilt_deg": "head orientation implausible (upside down, or a wrong orientation in the header?)",
    "intensity_distance": "intensities in the brain unlike a T1 brain MRI",
}

#: A registration similarity at or below this is a brain whose contrast is inverted against the T1 template
#: (CSF bright): a T2-, PD- or FLAIR-weighted scan, refused with :data:`INVERTED_CONTRAST_VERDICT` instead of
#: "not a brain". Measured: the ICBM 2009c T2 template -0.92, a clinical GE PD FSE series (Papaya's test
#: DICOM) -0.43; a sphere, a blob "body" MRI and an upside-down head -0.04 to 0.01.
INVERTED_CONTRAST_SIMILARITY = -0.2
INVERTED_CONTRAST_VERDICT = ("a brain MRI with another contrast (CSF brighter than tissue: T2, PD or FLAIR?); "
                             "this model reads T1-weighted scans")


def refusal_verdict(name: str, value: float) -> str:
    """What the refusal of measure ``name`` at ``value`` says before the numbers."""
    if name == "registration_similarity" and value <= INVERTED_CONTRAST_SIMILARITY:
        return INVERTED_CONTRAST_VERDICT
    return REFUSAL_VERDICT[name]


@dataclass(frozen=True)
class Limits:
    """The refuse and warn range of one measure; ``None`` = unbounded on that side."""

    refuse: Range = (None, None)
    warn: Range = (None, None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Limits":
        return cls(refuse=_range(data.get(REFUSE)), warn=_range(data.get(WARN)))

    def to_dict(self) -> dict[str, list[float | None]]:
        """JSON-ready; bounds rounded to 4 decimals."""
        return {kind: [None if bound is None else round(bound, 4) for bound in bounds]
                for kind, bounds in ((REFUSE, self.refuse), (WARN, self.warn))}


@dataclass
class DomainReport:
    """The outcome of the check for one case: ``measures`` (name → value) and ``warnings`` (one line each)."""

    measures: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class DomainCheck:
    """The check for one model: :meth:`before_preprocessing` on the native volume, then
    :meth:`after_preprocessing` on the preprocessed case. Both raise :class:`InputError` to refuse.

    Args:
        limits: per measure; a measure without an entry is computed and reported, never judged.
        reference_histogram: the training scans' mean in-brain histogram (:data:`HISTOGRAM_BINS` bins);
            ``None``: ``intensity_distance`` is not computed.
    """

    def __init__(self, limits: Mapping[str, Limits], reference_histogram: np.ndarray | None = None) -> None:
        unknown = sorted(set(limits) - set(MEASURES))
        if unknown:
            raise ValueError(f"unknown domain measure(s): {', '.join(unknown)}")
        self.limits = dict(limits)
        self.reference_histogram = reference_histogram

    @classmethod
    def builtin(cls) -> "DomainCheck":
        """The conservative defaults: :data:`BUILTIN_REFUSE`, no warnings, no intensity comparison."""
        return cls({name: Limits(refuse=bounds) for name, bounds in BUILTIN_REFUSE.items()})

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None, where: str | Path = "<bundle>") -> "DomainCheck":
        """The check a model bundle's ``"domain"`` section describes (``None``: :meth:`builtin`).

        Raises:
            ModelBundleError: the section is malformed (names the problem).
        """
        if section is None:
            _log_builtin_once(where)
            return cls.builtin()
        try:
            if section.get("version") != DOMAIN_VERSION:
                raise ValueError(f"version is {section.get('version')!r}; this engine reads {DOMAIN_VERSION}")
            limits = {name: Limits.from_dict(entry) for name, entry in section["limits"].items()}
            histogram = section.get("intensity_histogram")
            reference = None
            if histogram is not None:
                reference = np.asarray(histogram, float)
                if reference.shape != (HISTOGRAM_BINS,) or not np.isclose(reference.sum(), 1.0):
                    raise ValueError(f"intensity_histogram must be {HISTOGRAM_BINS} numbers summing to 1")
            return cls(limits, reference)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ModelBundleError(where, f"invalid \"domain\" section in model.json ({error})") from error

    def to_section(self) -> dict[str, Any]:
        """The ``limits`` and ``intensity_histogram`` entries of a ``"domain"`` section."""
        section: dict[str, Any] = {"version": DOMAIN_VERSION,
                                   "limits": {name: self.limits[name].to_dict() for name in MEASURES
                                              if name in self.limits}}
        if self.reference_histogram is not None:
            section["intensity_histogram"] = [round(float(v), 6) for v in self.reference_histogram]
        return section

    def before_preprocessing(self, image: sitk.Image, path: str | Path | None = None) -> DomainReport:
        """Header measures of the native volume (< 1 s); refuses hopeless input before preprocessing.

        The volume is validated first, so that a broken file (2D, NaN, constant...) gets its own message.

        Raises:
            InputError: the volume is unusable, or a header measure lies outside its refuse range.
        """
        validate_volume(image, path)
        report = DomainReport()
        self._judge(report, header_measures(image), path)
        return report

    def after_preprocessing(self, case: PreprocessedCase, report: DomainReport,
                            path: str | Path | None = None) -> DomainReport:
        """Adds the model-space measures to ``report`` (from :meth:`before_preprocessing`), judges them.

        Raises:
            InputError: a measure lies outside its refuse range.
        """
        self._judge(report, model_space_measures(case, self.reference_histogram), path)
        for warning in report.warnings:
            log.warning("%s: %s", path or "image", warning)
        return report

    def _judge(self, report: DomainReport, measures: Mapping[str, float], path: str | Path | None) -> None:
        report.measures.update(measures)
        for name, value in measures.items():  # refusals first: a refused case needs no warnings
            limits = self.limits.get(name)
            if limits is not None and not _within(value, limits.refuse):
                raise InputError(path, f"{refusal_verdict(name, value)}: {MEASURES[name].label} "
                                       f"{MEASURES[name].format(value)} (accepted: {_range_text(name, limits.refuse)})")
        for name, value in measures.items():
            limits = self.limits.get(name)
            if limits is not None and not _within(value, limits.warn):
                report.warnings.append(f"{MEASURES[name].label} {MEASURES[name].format(value)}: the model was "
                                       f"trained and validated on {_range_text(name, limits.warn)}")


_builtin_logged: set[str] = set()


def _log_builtin_once(where: str | Path) -> None:
    if str(where) not in _builtin_logged:
        _builtin_logged.add(str(where))
        log.info("%s: model.json has no \"domain\" section; the domain check uses the built-in refusal "
                 "limits only (no warnings; run scripts/domain_reference.py to add one)", where)


def _within(value: float, bounds: Range) -> bool:
    low, high = bounds
    return (low is None or value >= low) and (high is None or value <= high)


def _range_text(name: str, bounds: Range) -> str:
    measure, (low, high) = MEASURES[name], bounds
    if low is not None and high is not None:
        return f"{measure.format(low)} to {measure.format(high)}"
    if low is not None:
        return f"at least {measure.format(low)}"
    return f"at most {measure.format(high)}"


def _range(value: Any) -> Range:
    if value is None:
        return (None, None)
    low, high = value
    for bound in (low, high):
        if bound is not None and not isinstance(bound, (int, float)):
            raise TypeError(f"range bounds must be numbers or null, not {bound!r}")
    return (None if low is None else float(low), None if high is None else float(high))
