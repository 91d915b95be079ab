"""The Slicer module's threshold slider: what moves at once, what waits for the slider to rest.

A float32 anomaly map (a smooth blob plus noise) of the size of MRBrainTumor1 (256×256×112) and
a large one (512×512×300, 0.5 × 0.5 × 0.6 mm), each with its segmentation, are loaded into a real MRML scene (slicer-core, as in ``Testing/test_slicer_scene.py``). Timed, as the
median of ``--runs``: the overlay's transparency floor (``SceneGlue.showOverlayFloor``, what follows
the slider while it moves) and the full re-threshold of the segment with its statistics and findings
(``SceneGlue.thresholdAnomalyMap``, run once the slider rests). Writes the ``<!-- slicer_rethreshold -->``
section of BENCHMARKS.md. Usage::

    python benchmarks/slicer_rethreshold.py [--runs 3] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmark_report import machine, publish

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "AnomalySeg"))
sys.path.insert(0, str(REPO / "Testing"))

import AnomalySegLib.reporting.findings  # noqa: E402,F401  (imported once, as in Slicer after a run)
from AnomalySegLib.io.segmentation_io import write_segmentation  # noqa: E402
from AnomalySegModuleLib import SceneGlue  # noqa: E402
from slicer_scene import build_scene  # noqa: E402

SECTION = "slicer_rethreshold"
#: ([k, j, i] shape, (i, j, k) spacing in mm) of each measured map.
SIZES = (((112, 256, 256), (0.94, 0.94, 1.4)), ((300, 512, 512), (0.5, 0.5, 0.6)))
THRESHOLDS = (0.6, 0.4, 0.7, 0.3, 0.5)


def _anomaly_map(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> sitk.Image:
    rng = np.random.default_rng(0)
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    k, j, i = np.meshgrid(*axes, indexing="ij", sparse=True)
    scores = np.exp(-((k / 0.2) ** 2 + (j / 0.25) ** 2 + (i / 0.25) ** 2)).astype(np.float32)
    scores += 0.05 * rng.random(shape, dtype=np.float32)
    image = sitk.GetImageFromArray(scores)
    image.SetSpacing(spacing)
    return image


def measure(shape, spacing, runs: int) -> tuple[list[float], list[float]]:
    """Seconds of the overlay floor update and of the full re-threshold, one per run."""
    with tempfile.TemporaryDirectory(prefix="anomalyseg-bench-") as folder:
        image = _anomaly_map(shape, spacing)
        sitk.WriteImage(image, str(Path(folder) / "map.nrrd"), False)
        write_segmentation(sitk.Cast(image > 0.5, sitk.sitkUInt8), Path(folder) / "anomaly.seg.nrrd")
        app = build_scene()
        map_node = app.load_volume(Path(folder) / "map.nrrd", "anomaly map")
        segmentation = app.segmentations_logic.LoadSegmentationFromFile(
            str(Path(folder) / "anomaly.seg.nrrd"), False, "anomaly")
        segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
        SceneGlue.showAnomalyMap(map_node, map_node, 0.5)
        floor_s, full_s = [], []
        for run in range(runs):
            threshold = THRESHOLDS[run % len(THRESHOLDS)]
            started = time.perf_counter()
            SceneGlue.showOverlayFloor(map_node, threshold)
            floor_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = SceneGlue.thresholdAnomalyMap(map_node, segmentation, segment_id, threshold)
            full_s.append(time.perf_counter() - started)
            print(f"{'x'.join(map(str, shape[::-1]))} threshold {threshold}: {full_s[-1]:.2f} s, "
                  f"{result.volumeMl:.1f} ml, {result.findings} finding(s)", flush=True)
    return floor_s, full_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    header = machine()
    rows = []
    for shape, spacing in SIZES:
        floor_s, full_s = measure(shape, spacing, args.runs)
        size = "×".join(map(str, shape[::-1]))
        rows += [f"| {size} | overlay transparency floor (`showOverlayFloor`) | while the slider moves | "
                 f"{statistics.median(floor_s) * 1000:.2f} ms |",
                 f"| {size} | segment + statistics + findings (`thresholdAnomalyMap`) | 0.3 s after the slider "
                 f"rests | {statistics.median(full_s):.1f} s |"]
    text = "\n".join([
        "## Slicer threshold slider (`benchmarks/slicer_rethreshold.py`)",
        "",
        f"Machine: {header}. slicer-core MRML scene, no Qt; median of {args.runs} runs. Both updates run in",
        "Slicer's main thread: the second one blocks the GUI while it runs.",
        "",
        "| map | what | when | median |",
        "|---|---|---|---|",
        *rows,
    ])
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
