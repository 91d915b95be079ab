"""Preprocessing wall time on MRBrainTumor1 (256×256×112): median of several runs, and per step.

Prints a table and writes it as the ``<!-- preprocess -->`` section of BENCHMARKS.md (created if
missing; the section is replaced if present). Usage::

    python benchmarks/preprocess.py [--runs 3] [--case mrbraintumor1] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import SimpleITK as sitk

from benchmark_report import publish

from AnomalySegLib import sample_data
from AnomalySegLib.device import cpu_model
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.preprocessing.template import load_template

SECTION = "preprocess"
TARGET_S = 30.0


def measure(case: str, runs: int) -> tuple[list[float], dict[str, list[float]], dict]:
    path = sample_data.fetch(case)
    load_template()  # read once, as a long-running process would
    totals, steps, info = [], {}, {}
    for _ in range(runs):
        start = time.perf_counter()
        result = preprocess_file(path)
        totals.append(time.perf_counter() - start)
        info = result.info
        for step, seconds in result.info["timings_s"].items():
            steps.setdefault(step, []).append(seconds)
    return totals, steps, info


def section(case: str, totals: list[float], steps: dict[str, list[float]], info: dict) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    size = "×".join(map(str, info["native_geometry"]["size"]))
    median = statistics.median(totals)
    lines = [
        "## Preprocessing (`benchmarks/preprocess.py`)",
        "",
        f"`preprocess_file` on {case} ({size} voxels) into the 96×96×50 model grid, {len(totals)} runs, "
        f"template already loaded. Machine: {os.cpu_count()} CPU cores (`nproc`), {cpu_model()}, "
        f"SimpleITK {sitk.Version.VersionString()} with {threads} threads, Python {platform.python_version()}; "
        f"load average at the end {load:.1f} (the CPU was shared with other jobs when this is above "
        f"{os.cpu_count()}: times are then pessimistic). Measured {time.strftime('%Y-%m-%d')}.",
        "",
        f"**Median wall time: {median:.1f} s** (runs: {', '.join(f'{t:.1f}' for t in totals)} s; "
        f"target < {TARGET_S:.0f} s on 2 cores: {'met' if median < TARGET_S else 'NOT met'}).",
        "",
        "| step | median s | share |",
        "|---|---|---|",
    ]
    for step, values in steps.items():
        step_median = statistics.median(values)
        lines.append(f"| {step} | {step_median:.2f} | {100 * step_median / median:.0f} % |")
    lines += ["", f"Mask source: {info['mask_source']}; registration iterations (similarity, affine): "
              f"{info['registration']['iterations']}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--case", default="mrbraintumor1")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    totals, steps, info = measure(args.case, max(1, args.runs))
    text = section(args.case, totals, steps, info)
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
