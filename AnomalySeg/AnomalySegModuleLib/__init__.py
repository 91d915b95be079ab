"""Helpers of the AnomalySeg Slicer module that need no Qt: scene glue, the engine process, one run.

``SceneGlue`` and ``SegmentationRun`` use only MRML and VTK classes, so they run unchanged under
``slicer-core`` (tests) and inside Slicer; ``InferenceProcess`` is plain Python (subprocess and
threads); ``Dependencies`` installs the engine's packages (inside Slicer only).
"""
