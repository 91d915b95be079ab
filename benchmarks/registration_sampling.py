"""How much the affine registration depends on its random sample of voxels, and what a denser sample costs.

The registration's Mattes metric is computed on ``RegistrationSpec.sampling_fraction`` of each level's
voxels, drawn with ``random_seed``: deterministic for one seed, but another seed is just as valid a
choice. For each real scan, the bundled model's preprocessing runs end to end (``preprocess_file``, as
``segment`` runs it) with ``--seeds`` seeds at each ``--fractions`` value; we report

- the spread: the distance between where two seeds' transforms map the same template points, the median
  over the points, then the median (and max) over every pair of seeds, in the posterior fossa (template
  brain points with z < −20 mm and y > 40 mm, LPS: the cerebellum, where a misplaced structure was flagged
  as a lesion, BENCHMARKS.md "Diagnosis (hand-written, 2026-12-08 early)") and over the whole brain;
- the median wall time of the registration step (``info["timings_s"]["registration"]``) and of the whole
  preprocessing.

Run: ``PYTHONPATH=. python benchmarks/registration_sampling.py [--fractions 0.02 0.05 0.1] [--seeds 3]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics

import numpy as np
import SimpleITK as sitk
from benchmark_report import machine, publish

from AnomalySegLib import sample_data
from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.pipeline import default_model_path
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.preprocessing.registration import mask_points, point_errors_mm
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.preprocessing.template import load_template

SECTION = "registration_sampling"
#: Real scans a user might segment: the tumour samples, skull-on healthy heads, skull-stripped ones.
SCANS = ("mrbraintumor1", "mrbraintumor2", "mrhead", "itk_kmeans_t1", "ds000240_t1", "myconnectome_t1",
         "colin27_t1", "robex_atlas_t1", "papaya_sample_t1", "someones_anatomy")
#: Posterior fossa of the template, LPS mm: below z = −20 and behind y = 40.
POSTERIOR_FOSSA_MAX_Z_MM = -20.0
POSTERIOR_FOSSA_MIN_Y_MM = 40.0
SEED_STEP = 100  # a level uses seed, seed + 1, ...: seeds this far apart share no sample set


def with_sampling(spec: PreprocessingSpec, fraction: float, seed: int) -> PreprocessingSpec:
    """``spec`` with the registration's sampling fraction and seed replaced."""
    return dataclasses.replace(spec, registration=dataclasses.replace(
        spec.registration, sampling_fraction=fraction, random_seed=seed))


def spread_mm(transforms: list[sitk.Transform], points: np.ndarray) -> tuple[float, float]:
    """``(median, max)`` over every pair of transforms of the median distance (mm) between where the two
    map ``points`` (``[N, 3]`` template LPS mm)."""
    pairs = [float(np.median(point_errors_mm(a, b, points))) for a, b in itertools.combinations(transforms, 2)]
    return statistics.median(pairs), max(pairs)


def measure(scan: str, fraction: float, seeds: int, spec: PreprocessingSpec, points: dict[str, np.ndarray]) -> dict:
    """Preprocess ``scan`` once per seed at ``fraction``; the spreads and median times."""
    path = sample_data.fetch(scan)
    transforms, registration_s, total_s = [], [], []
    for k in range(seeds):
        case = preprocess_file(path, spec=with_sampling(spec, fraction, spec.registration.random_seed + SEED_STEP * k))
        transforms.append(case.transform)
        registration_s.append(case.info["timings_s"]["registration"])
        total_s.append(sum(case.info["timings_s"].values()))
    row = {"scan": scan, "fraction": fraction, "registration_s": statistics.median(registration_s),
           "preprocess_s": statistics.median(total_s)}
    for region, region_points in points.items():
        row[region] = spread_mm(transforms, region_points)
    print(row, flush=True)
    return row


def report(rows: list[dict], seeds: int, spec: PreprocessingSpec) -> str:
    lines = [
        "## Registration: its random sample of voxels (`benchmarks/registration_sampling.py`)",
        "",
        f"Machine: {machine()}. The bundled model's preprocessing (`preprocess_file`, template "
        f"`{spec.template}`, today's sampling fraction {spec.registration.sampling_fraction:g}) run with "
        f"{seeds} sampling seeds ({spec.registration.random_seed}, +{SEED_STEP}, …) per scan and fraction. "
        "Spread: distance between where two seeds' transforms put the same template point, median over the "
        "points, then median (max) over the pairs of seeds. Posterior fossa: template brain points with "
        f"z < {POSTERIOR_FOSSA_MAX_Z_MM:g} mm and y > {POSTERIOR_FOSSA_MIN_Y_MM:g} mm (LPS). Times: medians "
        "over the seeds.",
        "",
        "| scan | sampling fraction | spread, posterior fossa | spread, whole brain | registration s | "
        "preprocessing s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        fossa, brain = row["posterior_fossa"], row["whole_brain"]
        lines.append(f"| {row['scan']} | {row['fraction']:g} | {fossa[0]:.2f} ({fossa[1]:.2f}) mm | "
                     f"{brain[0]:.2f} ({brain[1]:.2f}) mm | {row['registration_s']:.1f} | "
                     f"{row['preprocess_s']:.1f} |")
    lines.append("")
    for fraction in sorted({row["fraction"] for row in rows}):
        chosen = [row for row in rows if row["fraction"] == fraction]
        lines.append(
            f"- fraction {fraction:g}: posterior-fossa spread median over the scans "
            f"{statistics.median(r['posterior_fossa'][0] for r in chosen):.2f} mm (worst pair "
            f"{max(r['posterior_fossa'][1] for r in chosen):.2f} mm); registration "
            f"{statistics.median(r['registration_s'] for r in chosen):.1f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scans", nargs="+", default=list(SCANS), choices=sorted(sample_data.CATALOGUE))
    parser.add_argument("--no-write", action="store_true", help="print the section; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2: the spread compares seeds")
    spec = PreprocessingSpec.from_dict(load_bundle(default_model_path()).description["preprocessing"])
    brain = mask_points(load_template(spec.template).mask, step=50)
    fossa = brain[(brain[:, 2] < POSTERIOR_FOSSA_MAX_Z_MM) & (brain[:, 1] > POSTERIOR_FOSSA_MIN_Y_MM)]
    points = {"posterior_fossa": fossa, "whole_brain": brain}
    rows = [measure(scan, fraction, args.seeds, spec, points) for scan in args.scans for fraction in args.fractions]
    publish(SECTION, report(rows, args.seeds, spec), write=not args.no_write, after="preprocess")


if __name__ == "__main__":
    main()
