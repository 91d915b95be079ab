"""Where the engine finds the project's ``Resources/`` folder (templates, bundled models, samples).

Order: ``$ANOMALYSEG_RESOURCES``; the ``Resources`` folder beside ``AnomalySegLib`` (source
checkout, editable install); the Slicer extension's installed module share folder (the
``Resources`` folder of the ``AnomalySeg`` module next to this library).
"""

from __future__ import annotations

import os
from pathlib import Path

RESOURCES_ENV = "ANOMALYSEG_RESOURCES"


def resources_dir() -> Path:
    """The ``Resources`` folder; raises ``FileNotFoundError`` naming the places searched."""
    candidates = []
    if os.environ.get(RESOURCES_ENV):
        candidates.append(Path(os.environ[RESOURCES_ENV]))
    package_parent = Path(__file__).resolve().parent.parent
    candidates += [package_parent / "Resources", package_parent / "AnomalySeg" / "Resources"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no Resources folder found (searched {', '.join(map(str, candidates))}); "
        f"set {RESOURCES_ENV} to the AnomalySeg Resources folder"
    )
