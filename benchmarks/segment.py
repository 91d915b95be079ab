"""End-to-end ``anomalyseg segment`` on MRBrainTumor1: wall time per case and per stage, peak memory.

Runs the real command in fresh processes, as a user would:

* **single case**: ``anomalyseg segment sample.nii.gz`` (process start, imports and model loading
  included), ``--runs`` times → median wall time and per-stage medians from ``results.json``;
* **batch**: one process over a folder of ``--batch`` copies of the case (model loaded once) →
  median seconds per case inside a batch.

Peak memory is the largest resident set size of the child processes (``getrusage``). Prints a
Markdown section and writes it to BENCHMARKS.md (``<!-- segment -->``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchmark_report import machine, publish, shown_path

from AnomalySegLib import sample_data
from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.pipeline import default_model_path

SECTION = "segment"
STAGES = ("load", "preprocess", "reconstruct", "segment", "score", "restore", "write")
TARGET_CPU_S = 60.0


def segment(inputs: Path, output: Path, model: Path, device: str) -> tuple[float, list[dict]]:
    """Run the CLI once; returns its wall time and the case rows of results.json."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "AnomalySegLib", "-q", "segment", str(inputs), "-o", str(output),
                    "--model", str(model), "--device", device], check=True)
    seconds = time.perf_counter() - started
    rows = json.loads((output / "results.json").read_text(encoding="utf-8"))["cases"]
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: the bundled model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=3, help="single-case runs")
    parser.add_argument("--batch", type=int, default=3, help="cases in the batch run (0: skip)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    model = args.model or default_model_path()
    bundle = load_bundle(model)  # fails early, naming the bundle, if it is not valid
    sample = sample_data.fetch("mrbraintumor1")
    host = machine()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        single, stage_rows = [], []
        for run in range(args.runs):
            seconds, rows = segment(sample, scratch / f"single{run}", model, args.device)
            single.append(seconds)
            stage_rows.append(rows[0])
        per_case_in_batch = []
        if args.batch:
            folder = scratch / "batch_in"
            folder.mkdir()
            for index in range(args.batch):
                shutil.copy(sample, folder / f"case{index}.nii.gz")
            _, rows = segment(folder, scratch / "batch_out", model, args.device)
            per_case_in_batch = [row["seconds_total"] for row in rows]
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB → GiB (Linux)

    median = statistics.median(single)
    lines = [
        "## End-to-end segmentation (`benchmarks/segment.py`)",
        "",
        f"`anomalyseg segment` on MRBrainTumor1 (256×256×112) with the model `{bundle.description.get('name', model.name)}`"
        f" (`{shown_path(model)}`), device `{args.device}`, torch {torch.__version__}. Machine: {host}. "
        f"Measured {time.strftime('%Y-%m-%d')}; medians.",
        "",
        f"**Single case, whole command (process start, imports, model loading, all outputs): median {median:.1f} s** "
        f"(runs: {', '.join(f'{s:.1f}' for s in single)} s; target on 2 CPU cores < {TARGET_CPU_S:.0f} s: "
        f"{'met' if median < TARGET_CPU_S else 'NOT met'}).",
    ]
    if per_case_in_batch:
        lines.append(f"**In a batch of {len(per_case_in_batch)} cases (model loaded once): median "
                     f"{statistics.median(per_case_in_batch):.1f} s per case.**")
    lines += [f"Peak resident memory of one `segment` process: {peak_gib:.2f} GiB. Load average at the end: "
              f"{os.getloadavg()[0]:.1f} (above the core count, other jobs shared the CPU and times are pessimistic).",
              "",
              "| stage | median s | share of the case |", "|---|---|---|"]
    totals = statistics.median(row["seconds_total"] for row in stage_rows)
    for stage in STAGES:
        value = statistics.median(row[f"seconds_{stage}"] for row in stage_rows)
        lines.append(f"| {stage} | {value:.2f} | {100 * value / totals:.0f} % |")
    lines.append(f"| **case total** (without process start and model loading) | {totals:.2f} | 100 % |")
    text = "\n".join(lines)
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
