"""Brain mask of skull-on scans: the template's mask (default) vs learned extraction (deepbet).

Issue #16 asks for the false positives near the brain rim on healthy skull-on scans, with and without
the learned brain extraction. For each real healthy skull-on scan, both preprocessings run end to end
(the default model's spec, only ``brain_mask.method`` differs); the bundled default model scores each
result, and we report

- the false positives of the default model at its calibrated ``val`` threshold (``AS > t``, no clean-up:
  the paper's rule), in the brain and in its rim (the outer 4 mm = 2 voxels of the case's brain mask),
  in ml: the scans are healthy, so every flagged voxel is a false positive;
- where the scan comes with a reference brain mask (ROBEX's atlas mask, the ITK example's skull-strip
  labels), the Dice of each method's mask with the reference, both on the model grid (the reference is
  carried through the case's own transform, as labels are), and the flagged ml outside the reference
  brain (voxels that are not brain at all);
- the wall time of the brain-mask step (deepbet's CPU time with the learned method) and of the whole
  preprocessing.

Scans: ``robex_atlas_t1`` and ``itk_kmeans_t1`` are not among the default model's training volumes
(``itk_kmeans_t1`` set its thresholds, MODEL_CARD.md); ``mrhead`` and ``colin27_t1`` are training
volumes, listed for the mask comparison only.

Run: ``PYTHONPATH=. python benchmarks/brain_mask.py [--threads 1]`` (needs ``pip install 'anomalyseg[brain]'``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from benchmark_report import machine, publish
from scipy import ndimage

from AnomalySegLib import sample_data
from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.metrics import dice
from AnomalySegLib.pipeline import default_model_path
from AnomalySegLib.preprocessing.pipeline import preprocess_file
from AnomalySegLib.preprocessing.spec import PreprocessingSpec, with_brain_mask_method
from AnomalySegLib.scoring.volume import SCORING_SECTION, AnomalyScorer

SECTION = "brain-mask"
#: Healthy skull-on scans → their reference brain mask in :mod:`AnomalySegLib.sample_data` (or ``None``),
#: and whether the default model trained on them.
SCANS = {
    "robex_atlas_t1": ("robex_atlas_mask", False),
    "itk_kmeans_t1": ("itk_kmeans_brain_labels", False),
    "mrhead": (None, True),
    "colin27_t1": (None, True),
}
METHODS = ("template", "learned")
RIM_VOXELS = 2  # 4 mm on the 2 mm model grid
VOXEL_ML = 0.008  # one 2 mm voxel


def measure(scan: str, method: str, scorer: AnomalyScorer, threshold: float, spec: PreprocessingSpec) -> dict:
    """Preprocess ``scan`` with the brain-mask ``method``, score it, and count what is flagged where."""
    reference = SCANS[scan][0]
    start = time.perf_counter()
    case = preprocess_file(sample_data.fetch(scan), spec=with_brain_mask_method(spec, method),
                           labels_path=None if reference is None else sample_data.fetch(reference))
    seconds = time.perf_counter() - start
    image, mask, reference_mask = case.arrays()
    flagged = scorer.score(image, mask, seed=0).anomaly_score > threshold
    rim = mask & ~ndimage.binary_erosion(mask, iterations=RIM_VOXELS)
    result = {
        "seconds": seconds, "mask_seconds": case.info["timings_s"]["brain_mask"],
        "mask_source": case.info["mask_source"], "mask": mask,
        "brain_ml": mask.sum() * VOXEL_ML, "flagged_ml": flagged.sum() * VOXEL_ML,
        "rim_flagged_ml": (flagged & rim).sum() * VOXEL_ML,
    }
    if reference_mask is not None:
        result["reference_dice"] = dice(mask, reference_mask)
        result["outside_reference_ml"] = (flagged & ~reference_mask).sum() * VOXEL_ML
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = machine()
    bundle = load_bundle(default_model_path())
    threshold = float(bundle.description[SCORING_SECTION]["thresholds"]["val"])
    spec = PreprocessingSpec.from_dict(bundle.description["preprocessing"])
    scorer = AnomalyScorer.from_bundle(bundle, device="cpu")
    rows, totals = [], {method: {"flagged": 0.0, "rim": 0.0, "outside": 0.0} for method in METHODS}
    deepbet_seconds = []
    for scan, (reference, trained) in SCANS.items():
        results = {method: measure(scan, method, scorer, threshold, spec) for method in METHODS}
        agreement = dice(results["template"]["mask"], results["learned"]["mask"])
        deepbet_seconds.append(results["learned"]["mask_seconds"])
        for method in METHODS:
            r = results[method]
            if not trained:
                totals[method]["flagged"] += r["flagged_ml"]
                totals[method]["rim"] += r["rim_flagged_ml"]
                totals[method]["outside"] += r.get("outside_reference_ml", 0.0)
            versus_reference = "–" if reference is None else f"{r['reference_dice']:.3f}"
            outside = "–" if reference is None else f"{r['outside_reference_ml']:.1f}"
            rows.append(f"| {scan}{' (trained on)' if trained else ''} | {method} ({r['mask_source']}) | "
                        f"{r['seconds']:.0f} | {r['mask_seconds']:.1f} | {r['brain_ml']:.0f} | {agreement:.3f} | "
                        f"{versus_reference} | {r['flagged_ml']:.1f} | {r['rim_flagged_ml']:.1f} | {outside} |")
    held_out = [scan for scan, (_, trained) in SCANS.items() if not trained]
    summary = "; ".join(
        f"{method}: {totals[method]['flagged']:.1f} ml flagged, {totals[method]['rim']:.1f} ml of it in the rim, "
        f"{totals[method]['outside']:.1f} ml outside the reference brain" for method in METHODS)
    table = "\n".join(rows)
    text = f"""## Brain mask of skull-on scans: template vs learned (deepbet)

`benchmarks/brain_mask.py`; {header}; torch {args.threads} thread(s). Each healthy skull-on scan is
preprocessed with the default model's spec, its brain mask from the template (affine) or from deepbet
1.0.2 (CPU), then scored by the bundled default model at its `val` threshold ({threshold:.3f}), `AS > t`
without clean-up. Healthy scans: every flagged voxel is a false positive. Rim = outer 4 mm (2 voxels) of
the case's brain mask. Reference masks: ROBEX's atlas mask (`robex_atlas_mask`), the ITK example's
skull-strip labels > 0 (`itk_kmeans_brain_labels`), carried to the model grid through each case's own
transform. Single runs (no median): times are indicative only on this shared machine.

| scan | brain mask | preprocess s | mask step s | brain ml | mask Dice template vs learned | mask Dice vs reference | flagged ml | in the rim ml | outside the reference brain ml |
|---|---|---|---|---|---|---|---|---|---|
{table}

Sum over the scans the default model did not train on ({', '.join(held_out)}): {summary}.
deepbet's brain-mask step: median {float(np.median(deepbet_seconds)):.1f} s per scan on the CPU.
"""
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
