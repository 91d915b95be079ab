"""The model bundles the module offers and the threshold presets each one carries (no Qt, no torch).

A bundle is a folder with ``model.json``; its ``scoring.thresholds`` section holds the calibrated
thresholds by preset name (``val``, ``fpr1``, ...). The module offers exactly the presets of the
selected bundle, read here with ``json`` alone because the module runs before the engine's packages
(torch) are installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from AnomalySegLib.resources import resources_dir

#: Same folder as ``AnomalySegLib.pipeline.default_model_path()`` (which needs torch to import).
DEFAULT_MODEL_NAME = "default"
#: Words shown for the presets the engine knows; a preset not listed here is shown by its name.
PRESET_LABELS = {
    "val": "Calibrated (validation set)",
    "fpr1": "Specific: 1 % healthy voxels above",
    "fpr5": "Balanced: 5 % healthy voxels above",
    "fpr10": "Sensitive: 10 % healthy voxels above",
}


def bundledModelFolders() -> list[Path]:
    """The model bundles shipped in ``Resources/Models``, by name."""
    bundled = resources_dir() / "Models"
    return sorted(p for p in bundled.iterdir() if (p / "model.json").is_file()) if bundled.is_dir() else []


def defaultModelFolder() -> Path:
    """The bundle the engine uses when no ``--model`` is given."""
    return resources_dir() / "Models" / DEFAULT_MODEL_NAME


def joinFolders(folders: list[Path]) -> str:
    """The user's added model folders as one settings value (``os.pathsep``-separated)."""
    return os.pathsep.join(str(folder) for folder in folders)


def splitFolders(value: str) -> list[Path]:
    """The existing folders of a settings value written by :func:`joinFolders`."""
    return [Path(text) for text in str(value or "").split(os.pathsep) if text and Path(text).is_dir()]


def presetThresholds(modelFolder: str | Path | None) -> dict[str, float]:
    """The preset thresholds of a bundle (``""``/``None``: the engine's default bundle), in file order.

    Raises:
        ValueError: ``model.json`` is missing or unreadable, or its presets are not numbers (names the file).
    """
    folder = Path(modelFolder) if modelFolder else defaultModelFolder()
    path = folder / "model.json"
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the model description ({error})") from None
    scoring = description.get("scoring") if isinstance(description, dict) else None
    stored = scoring.get("thresholds") if isinstance(scoring, dict) else None
    if not isinstance(stored, dict):
        return {}
    presets = {}
    for name, value in stored.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: threshold preset {name!r} is not a number: {value!r}")
        presets[str(name)] = float(value)
    return presets


def presetLabel(name: str, threshold: float) -> str:
    """What the preset list shows for one preset, e.g. ``"Calibrated (validation set): 0.391"``."""
    return f"{PRESET_LABELS.get(name, name)}: {threshold:.3g}"
