"""Cost of the domain check beyond preprocessing: median wall time per case, on real scans.

Each scan is read and preprocessed once (not timed); then the check's two halves are timed
``--runs`` times each: ``before_preprocessing`` (header measures on the native volume) and
``after_preprocessing`` (model-space measures against the template and the training histogram). The
template-derived arrays are cached per process, as in a long-running batch; the first call (which
builds that cache) is timed separately. Writes the ``<!-- domain_check -->`` section of BENCHMARKS.md.
Usage::

    python benchmarks/domain_check.py [--runs 5] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from benchmark_report import machine, publish

from AnomalySegLib import sample_data
from AnomalySegLib.io.volume_io import read_volume
from AnomalySegLib.pipeline import default_model_path
from AnomalySegLib.preprocessing.pipeline import preprocess_image
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.quality.domain import DomainCheck, DomainReport

SECTION = "domain_check"
SCANS = ("mrbraintumor1", "mrhead", "itk_kmeans_t1")
TARGET_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scans", nargs="+", default=list(SCANS), help="fetch-data names")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    description = json.loads((default_model_path() / "model.json").read_text(encoding="utf-8"))
    check = DomainCheck.from_section(description.get("domain"), default_model_path())
    header = machine()
    rows, first_call = [], None
    for name in args.scans:
        image = read_volume(sample_data.fetch(name))
        case = preprocess_image(image, spec=PreprocessingSpec(), image_path=name)
        if first_call is None:
            start = time.perf_counter()
            check.after_preprocessing(case, DomainReport(), name)
            first_call = time.perf_counter() - start
        before, after, cpu = [], [], []
        for _ in range(args.runs):
            cpu_start, start = time.process_time(), time.perf_counter()
            report = check.before_preprocessing(image, name)
            before.append(time.perf_counter() - start)
            start = time.perf_counter()
            check.after_preprocessing(case, report, name)
            after.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
        size = "×".join(str(n) for n in image.GetSize())
        rows.append(f"| {name} | {size} | {statistics.median(before):.2f} | {statistics.median(after):.2f} | "
                    f"{statistics.median(before) + statistics.median(after):.2f} | {statistics.median(cpu):.2f} |")
    text = "\n".join([
        "## Domain check (`benchmarks/domain_check.py`)",
        "",
        f"Machine: {header}. Median of {args.runs} runs per scan (numpy/SimpleITK, no torch); "
        f"preprocessing itself not counted. Target: < {TARGET_S:g} s per case. Wall times grow with the "
        "load average of a shared machine; the CPU time (all threads of the process) is the cost itself.",
        "",
        "| scan | voxels | before preprocessing (s) | after preprocessing (s) | total (s) | CPU time, total (s) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"First call in a process (template arrays built and cached): {first_call:.2f} s for the "
        "after-preprocessing half.",
    ])
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
