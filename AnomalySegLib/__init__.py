"""AnomalySeg engine: brain MRI anomaly segmentation with SADM (Behrendt et al., MIDL 2024).

Pure Python (torch, MONAI, SimpleITK, nibabel, numpy); it never imports slicer or qt, so the same
code serves the CLI, batch jobs, the Python console and the Slicer module (which runs it in a
subprocess).
"""

__version__ = "0.1.0"
