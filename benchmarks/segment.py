"""End-to-end ``anomalyseg segment`` on MRBrainTumor1: wall time per case and per stage, peak memory.

Runs the real command in fresh processes, as a user would:

* **single case**: ``anomalyseg segment sample.nii.gz`` (process start, imports and model loading
  included), ``--runs`` times → median wall time and per-stage medians from ``results.json``;
* **batch**: one process over a folder of ``--batch`` copies of the case (model loaded once) →
  median seconds per case inside a batch.

``--reference DIR`` interleaves single-case runs of another checkout (before/after under the same load);
``--engine-preprocessing`` also times a copy of the bundle whose preprocessing spec is this engine's
default (a bundle records the spec it was trained with, and ``segment`` repeats it).

``--fp32`` also times ``--precision fp32``: ``auto`` is bf16 only on CPUs with native bf16.

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
from benchmark_report import REPOSITORY, machine, publish, shown_path

from AnomalySegLib import sample_data
from AnomalySegLib.bundle import DESCRIPTION_FILE, load_bundle
from AnomalySegLib.pipeline import default_model_path
from AnomalySegLib.preprocessing.spec import MODEL_GRIDS, PreprocessingSpec

SECTION = "segment"
STAGES = ("load", "preprocess", "reconstruct", "segment", "score", "restore", "write")
#: Whole-command targets on 2 CPU cores by model grid (issue #15: the paper's crop; issue #13: the whole brain).
TARGET_CPU_S = {"paper": 15.0, "whole_brain": 30.0}
THIS = "this checkout"
ENGINE_SPEC = "this checkout, bundle with the engine's default preprocessing spec"
FP32 = "this checkout, `--precision fp32`"


def segment(inputs: Path, output: Path, model: Path, device: str,
            code: Path = REPOSITORY, options: tuple[str, ...] = ()) -> tuple[float, list[dict]]:
    """Run the CLI of the checkout ``code`` once (with extra ``options``); returns its wall time and the case
    rows of results.json."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "AnomalySegLib", "-q", "segment", str(inputs), "-o", str(output),
                    "--model", str(model), "--device", device, *options], check=True, cwd=code,
                   env=dict(os.environ, PYTHONPATH=str(code)))
    seconds = time.perf_counter() - started
    rows = json.loads((output / "results.json").read_text(encoding="utf-8"))["cases"]
    return seconds, rows


def with_engine_preprocessing(model: Path, folder: Path) -> Path:
    """A copy of bundle ``model`` in ``folder`` whose preprocessing section is this engine's default
    spec (same weights): what the bundle gives once its spec is brought up to date."""
    copy = folder / model.name
    shutil.copytree(model, copy)
    description = json.loads((copy / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    description["preprocessing"] = PreprocessingSpec().to_dict()
    (copy / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2), encoding="utf-8")
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: the bundled model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=3, help="single-case runs")
    parser.add_argument("--batch", type=int, default=3, help="cases in the batch run (0: skip)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="another checkout whose single-case runs are interleaved with these (before/after)")
    parser.add_argument("--engine-preprocessing", action="store_true",
                        help="also time the bundle with its preprocessing spec replaced by this engine's default")
    parser.add_argument("--fp32", action="store_true",
                        help="also time `segment --precision fp32` (what `auto` gives on a CPU without native bf16)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    model = args.model or default_model_path()
    bundle = load_bundle(model)  # fails early, naming the bundle, if it is not valid
    sample = sample_data.fetch("mrbraintumor1")
    host = machine()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        variants = {THIS: (REPOSITORY, model, ())}
        if args.reference is not None:
            variants = {f"reference `{args.reference.name}`": (args.reference.resolve(), model, ()), **variants}
        if args.engine_preprocessing:
            variants[ENGINE_SPEC] = (REPOSITORY, with_engine_preprocessing(model, scratch), ())
        if args.fp32:
            variants[FP32] = (REPOSITORY, model, ("--precision", "fp32"))
        single: dict[str, list[float]] = {name: [] for name in variants}
        stage_rows: dict[str, list[dict]] = {name: [] for name in variants}
        for run in range(args.runs):
            for index, (name, (code, bundle_path, options)) in enumerate(variants.items()):
                seconds, rows = segment(sample, scratch / f"single{run}_{index}", bundle_path, args.device, code,
                                        options)
                single[name].append(seconds)
                stage_rows[name].append(rows[0])
        per_case_in_batch = []
        if args.batch:
            folder = scratch / "batch_in"
            folder.mkdir()
            for index in range(args.batch):
                shutil.copy(sample, folder / f"case{index}.nii.gz")
            _, rows = segment(folder, scratch / "batch_out", model, args.device)
            per_case_in_batch = [row["seconds_total"] for row in rows]
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB → GiB (Linux)

    median = statistics.median(single[THIS])
    grid = PreprocessingSpec.from_dict(bundle.description.get("preprocessing", {})).grid
    grid_name = next((name for name, known in MODEL_GRIDS.items() if known == grid), "other")
    target = TARGET_CPU_S.get(grid_name)
    lines = [
        "## End-to-end segmentation (`benchmarks/segment.py`)",
        "",
        f"`anomalyseg segment` on MRBrainTumor1 (256×256×112) with the model `{bundle.description.get('name', model.name)}`"
        f" (`{shown_path(model)}`), device `{args.device}`, torch {torch.__version__}. Machine: {host}. "
        f"Measured {time.strftime('%Y-%m-%d')}; medians. The CPU was shared with other jobs (a model training "
        f"among them) when the load is above {os.cpu_count()}: times are then pessimistic.",
        "",
        f"**Single case, whole command (process start, imports, model loading, all outputs): median {median:.1f} s** "
        f"(runs: {', '.join(f'{s:.1f}' for s in single[THIS])} s; model grid `{grid_name}` {'×'.join(map(str, grid.size))}"
        + (f"; target on 2 CPU cores ≤ {target:.0f} s: {'met' if median <= target else 'NOT met'}" if target else "")
        + f"). Precision `auto`, which is {stage_rows[THIS][0]['precision']} on this machine "
        "(`device.autocast_dtype`). The bundle's preprocessing spec is the one it was trained with.",
    ]
    for name, values in single.items():
        if name != THIS:
            lines.append(f"{name}, interleaved with these runs: median {statistics.median(values):.1f} s "
                         f"(runs: {', '.join(f'{s:.1f}' for s in values)} s).")
    if per_case_in_batch:
        lines.append(f"**In a batch of {len(per_case_in_batch)} cases (model loaded once): median "
                     f"{statistics.median(per_case_in_batch):.1f} s per case.**")
    lines += [f"Peak resident memory of one `segment` process: {peak_gib:.2f} GiB. Load average at the end: "
              f"{os.getloadavg()[0]:.1f}.",
              "",
              "| stage | " + " | ".join(f"{name}: median s" for name in variants) + " |",
              "|---|" + "---|" * len(variants)]
    for stage in STAGES:
        cells = [f"{statistics.median(row[f'seconds_{stage}'] for row in rows):.2f}" for rows in stage_rows.values()]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    totals = [f"{statistics.median(row['seconds_total'] for row in rows):.2f}" for rows in stage_rows.values()]
    lines.append("| **case total** (without process start and model loading) | " + " | ".join(totals) + " |")
    text = "\n".join(lines)
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
