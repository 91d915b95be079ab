"""Benchmark Stage I reconstruction: seconds per volume (50 slices × 3 noise levels).

Runs the CPU-sized and the paper-size configurations on the CPU (fp32 and bf16 autocast) and, where a
GPU is available, on the GPU (fp32, bf16, fp16), and writes the table into BENCHMARKS.md between
``<!-- recon -->`` and ``<!-- /recon -->``. Weights are random (speed does not depend on them); the
``max |Δ|`` column compares each 16-bit reconstruction with fp32 on the same weights and noise.

    python benchmarks/recon.py                       # all configs, all devices found
    python benchmarks/recon.py --cpu-slices 10       # time 10 slices on the CPU, scale to 50
    python benchmarks/recon.py --no-write            # print only
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_report import BENCHMARKS, publish

from AnomalySegLib.device import describe
from AnomalySegLib.diffusion.reconstruction import Reconstructor, build_network, reconstruct_volume
from AnomalySegLib.diffusion.spec import ReconSpec
from AnomalySegLib.training.config import load_config

SECTION = "recon"
VOLUME_SLICES = 50
PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}


def random_network(spec: ReconSpec):
    torch.manual_seed(0)
    network = build_network(spec)
    with torch.no_grad():  # MONAI zero-initialises the output convolution: give it values
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    return network


def time_volume(reconstructor: Reconstructor, volume: np.ndarray, chunk_size: int | None, repeats: int):
    """(best seconds for the volume, reconstruction) after one warm-up run."""
    result = reconstruct_volume(reconstructor, volume, seed=0, chunk_size=chunk_size)
    best = float("inf")
    for _ in range(repeats):
        if reconstructor.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = reconstruct_volume(reconstructor, volume, seed=0, chunk_size=chunk_size)
        if reconstructor.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(configs: list[str], devices: list[str], cpu_slices: int, repeats: int, chunk: int | None) -> list[dict]:
    rows = []
    volume = np.random.default_rng(0).random((VOLUME_SLICES, 96, 96), dtype=np.float32)
    for name in configs:
        spec = ReconSpec.from_dict(load_config(name)["model"])
        network = random_network(spec)
        parameters = sum(p.numel() for p in network.parameters()) / 1e6
        for device_name in devices:
            device = torch.device(device_name)
            slices = cpu_slices if device.type == "cpu" else VOLUME_SLICES
            reference = None
            for precision in PRECISIONS[device.type]:
                reconstructor = Reconstructor(spec, network, device, precision=precision)
                seconds, result = time_volume(reconstructor, volume[:slices], chunk, repeats)
                seconds *= VOLUME_SLICES / slices
                if reference is None:
                    reference, difference = result.mean, 0.0
                else:
                    difference = float(np.abs(result.mean - reference).max())
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
                row = dict(config=name, params=parameters, device=describe(device), precision=precision,
                           seconds=seconds, slices=slices, difference=difference, peak_gib=peak)
                rows.append(row)
                print(f"{name:12s} {row['device']:40s} {precision:5s} {seconds:8.3f} s/volume "
                      f"(timed {slices} slices) max|Δ| {difference:.4f}", flush=True)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
    return rows


def markdown(rows: list[dict], note: str | None = None) -> str:
    lines = [
        "## Stage I reconstruction (`benchmarks/recon.py`)",
        "",
        f"Seconds per volume: {VOLUME_SLICES} slices of 96×96 × 3 noise levels (250, 500, 750), one network pass "
        "each, simplex noise included; best of repeated runs after a warm-up. CPU rows timed on fewer slices "
        "are scaled linearly to 50. `max |Δ|`: largest difference of the reconstruction from fp32 "
        f"(intensities in [0, 1], random weights). Measured {datetime.date.today().isoformat()}, "
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}."
        + (f" {note}" if note else ""),
        "",
        "| config | params (M) | device | precision | s / volume | slices timed | max \\|Δ\\| vs fp32 "
        "| peak GPU memory (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        peak = f"{row['peak_gib']:.1f}" if row["peak_gib"] is not None else "–"
        lines.append(
            f"| {row['config']} | {row['params']:.1f} | {row['device']} | {row['precision']} | {row['seconds']:.3f} "
            f"| {row['slices']} | {row['difference']:.4f} | {peak} |"
        )
    if not any(row["peak_gib"] is not None for row in rows):
        lines += ["", "No GPU on the machine that ran this: the GPU rows (fp32/bf16/fp16, and the channels-last and "
                  "`torch.compile` options) are written by `make gpu-check` into the GPU check section below. "
                  "Target on an H200: `recon_paper` ≤ 0.1 s per volume for both networks."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["recon_cpu", "recon_paper"])
    parser.add_argument("--devices", nargs="+", help="default: cpu, and cuda when available")
    parser.add_argument("--cpu-slices", type=int, default=VOLUME_SLICES, help="slices timed on the CPU")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk", type=int, help="rows per network pass (default: from memory)")
    parser.add_argument("--threads", type=int, help="CPU threads")
    parser.add_argument("--output", type=Path, default=BENCHMARKS)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", help="a sentence about the conditions, added to the section")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = run(args.configs, devices, args.cpu_slices, args.repeats, args.chunk)
    publish(SECTION, markdown(rows, args.note), write=not args.no_write, path=args.output)


if __name__ == "__main__":
    main()
