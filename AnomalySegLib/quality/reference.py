"""The ``"domain"`` section of a model bundle, measured on the model's own training and validation scans.

For every measure of :mod:`.catalogue` the scans give an observed ``[min, max]``; the *warn* range is
that range widened by :data:`WARN_RULES` on the side that matters, the *refuse* range is
:data:`~.domain.BUILTIN_REFUSE` (what no model of this engine can use), widened where needed so that it
always contains the warn range. The mean in-brain histogram of the training scans is the reference of
``intensity_distance``. ``scripts/domain_reference.py`` runs this for a bundle and writes the section.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from AnomalySegLib.bundle import DESCRIPTION_FILE, load_bundle
from AnomalySegLib.io.atomic import atomic_write_text
from AnomalySegLib.preprocessing.pipeline import preprocess_image
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.quality.catalogue import MEASURES
from AnomalySegLib.quality.domain import BUILTIN_REFUSE, DomainCheck, Limits
from AnomalySegLib.quality.measures import (brain_histogram, header_measures, intensity_distance,
                                            model_space_measures)

#: measure → (judged side: "low", "high" or "both"; margin in the measure's unit added to the observed range)
WARN_RULES: dict[str, tuple[str, float]] = {
    "slice_thickness_mm": ("high", 0.0),       # validated thickness, no extrapolation
    "in_plane_spacing_mm": ("high", 0.0),
    "neighbour_correlation": ("low", 0.05),
    "registration_similarity": ("low", 0.05),
    "brain_volume_ml": ("both", 250.0),        # about ±2 SD of adult intracranial brain volume
    "fov_brain_fraction": ("low", 0.03),
    "head_tilt_deg": ("high", 15.0),
    "intensity_distance": ("high", 0.02),
}
#: Training-scan names in a bundle's provenance carry these prefixes before the ``anomalyseg fetch-data`` name.
CASE_PREFIXES = ("train_", "val_")


def provenance_volumes(description: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(training, validation)`` data names (``anomalyseg fetch-data`` names) of a bundle's Stage I
    provenance, e.g. ``train_mrhead`` → ``mrhead``."""
    stage1 = description.get("provenance", {}).get("stage1", {})

    def strip(name: str) -> str:
        return next((name[len(p):] for p in CASE_PREFIXES if name.startswith(p)), name)

    return ([strip(n) for n in stage1.get("training_cases", [])],
            [strip(n) for n in stage1.get("validation_cases", [])])


def measure_scans(scans: Mapping[str, sitk.Image], spec: PreprocessingSpec
                  ) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Header and model-space measures (without ``intensity_distance``) and the in-brain histogram of
    each scan, preprocessed with ``spec``: ``(measures by scan, histogram by scan)``."""
    measures, histograms = {}, {}
    for name, image in scans.items():
        case = preprocess_image(image, spec=spec, image_path=name)
        measures[name] = {**header_measures(image), **model_space_measures(case, None)}
        histograms[name] = brain_histogram(*case.arrays()[:2])
    return measures, histograms


def domain_section(measures: Mapping[str, Mapping[str, float]], histograms: Mapping[str, np.ndarray],
                   training: Sequence[str], validation: Sequence[str]) -> dict[str, Any]:
    """The ``"domain"`` section from :func:`measure_scans` output (all scans observed; the training
    scans alone give the reference histogram)."""
    reference = np.mean([histograms[name] for name in training], axis=0)
    reference = reference / reference.sum()
    observed = {name: dict(values) for name, values in measures.items()}
    for name, values in observed.items():
        values["intensity_distance"] = intensity_distance(histograms[name], reference)
    limits = {}
    for measure in MEASURES:
        refuse = BUILTIN_REFUSE.get(measure, (None, None))
        warn: tuple[float | None, float | None] = (None, None)
        if measure in WARN_RULES:
            side, margin = WARN_RULES[measure]
            values = [scan[measure] for scan in observed.values()]
            warn = (min(values) - margin if side in ("low", "both") else None,
                    max(values) + margin if side in ("high", "both") else None)
            refuse = (_outer(refuse[0], warn[0], min), _outer(refuse[1], warn[1], max))
        limits[measure] = Limits(refuse=refuse, warn=warn)
    section = DomainCheck(limits, reference).to_section()
    section["source"] = ("scripts/domain_reference.py: warn = observed range on the scans below widened by "
                         "AnomalySegLib.quality.reference.WARN_RULES; refuse = quality.domain.BUILTIN_REFUSE")
    section["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    section["scans"] = {"training": list(training), "validation": list(validation)}
    section["observed"] = {name: {k: round(float(v), 4) for k, v in values.items()}
                           for name, values in observed.items()}
    return section


def write_domain_section(bundle_folder: str | Path, section: Mapping[str, Any]) -> Path:
    """Put ``section`` into the bundle's ``model.json`` as ``"domain"`` (atomic replace), every other
    section and file untouched; then load the bundle to check it (format, checksums, domain section).

    Raises:
        ModelBundleError: the bundle does not load afterwards (the previous model.json is restored).
    """
    path = Path(bundle_folder) / DESCRIPTION_FILE
    original = path.read_text(encoding="utf-8")
    description = json.loads(original)
    description["domain"] = dict(section)
    atomic_write_text(path, json.dumps(description, indent=2, allow_nan=False) + "\n", overwrite=True)
    try:
        bundle = load_bundle(bundle_folder)
        DomainCheck.from_section(bundle.description.get("domain"), bundle_folder)
    except Exception:
        atomic_write_text(path, original, overwrite=True)
        raise
    return path


def _outer(builtin: float | None, warn: float | None, pick) -> float | None:
    """The refuse bound that lies outside (or on) the warn bound."""
    if builtin is None or warn is None:
        return builtin
    return pick(builtin, warn)
