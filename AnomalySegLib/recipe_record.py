"""The default model recipe's record inside a bundle description: ``provenance.default_model``.

``scripts/train_default_model.py`` writes it (which bank sources trained the networks, which chose the
operating point, which were kept out of every choice, steps and minutes of both stages);
``scripts/calibrate_default_model.py`` rewrites its calibration and test sources when the operating point
is chosen again; the domain reference and the generalization benchmark read it. This module is the one
place that knows where the record lives and how older records named their training sources.
"""

from __future__ import annotations

from typing import Any, Mapping

#: The key of the record under the description's ``"provenance"``.
RECORD_KEY = "default_model"


def recipe_record(description: Mapping[str, Any]) -> dict[str, Any]:
    """The record of the recipe that made this bundle; empty for a bundle made otherwise."""
    return dict(description.get("provenance", {}).get(RECORD_KEY, {}))


def trained_sources(description: Mapping[str, Any]) -> list[str] | None:
    """The bank sources the recipe trained the networks on (``training_volumes`` in records made before the
    split by subject); ``None`` when the bundle records none (then nobody can tell what it saw)."""
    record = recipe_record(description)
    sources = record.get("training_sources", record.get("training_volumes"))
    return None if sources is None else list(sources)


def record_update(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``provenance`` entries that store ``record`` (for
    :func:`AnomalySegLib.calibration.write_scoring_section`, or to update a description in memory)."""
    return {RECORD_KEY: dict(record)}
