"""Where the engine finds the project's ``Resources/`` folder (UI, icons, bundled models, templates).

The folder is found in each of the three layouts:

- wheel (``pip install anomalyseg-*.whl``): ``AnomalySegLib/Resources`` inside the package (the
  wheel ships it as package data, see ``pyproject.toml``);
- source checkout or editable install: ``<repo>/Resources`` next to ``<repo>/AnomalySegLib``;
- installed Slicer extension: the build copies ``Resources/`` and ``AnomalySegLib/`` side by side
  into ``lib/Slicer-X.Y/qt-scripted-modules/`` (see the top-level ``CMakeLists.txt``), which is
  also where Slicer looks for the module's ``Resources`` (next to ``AnomalySeg.py``).

``$ANOMALYSEG_RESOURCES`` overrides all three.
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
    package = Path(__file__).resolve().parent
    candidates += [package / "Resources", package.parent / "Resources"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no Resources folder found (searched {', '.join(map(str, candidates))}); "
        f"set {RESOURCES_ENV} to the AnomalySeg Resources folder"
    )
