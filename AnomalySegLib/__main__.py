"""``python -m AnomalySegLib`` (inside Slicer: ``PythonSlicer -m AnomalySegLib``)."""

import sys

from AnomalySegLib.cli import main

sys.exit(main())
