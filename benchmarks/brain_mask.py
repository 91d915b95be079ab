"""Brain mask of skull-on scans: the template's mask (default) vs learned extraction (deepbet).

For each real healthy skull-on scan (MRHead, Colin27, the ITK example T1), both preprocessings run
end to end; the default model scores each result, and we report the preprocessing wall time (and that
of the brain-mask step), the brain volume on the model grid, the agreement of the two masks (Dice),
and the false positives of the default model at its calibrated ``val`` threshold: everywhere in the
brain and in the rim (the outer 4 mm = 2 voxels of the brain mask), in ml. Every flagged voxel is a
false positive: the scans are healthy. The default model saw MRHead and Colin27 in training and the
ITK scan in calibration (MODEL_CARD.md), so these are not held-out numbers; what they compare is the
mask, with everything else equal.

Run: ``PYTHONPATH=. python benchmarks/brain_mask.py`` (needs ``pip install 'anomalyseg[brain]'``).
"""

from __future__ import annotations

import argparse
import time

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
SCANS = ("mrhead", "colin27_t1", "itk_kmeans_t1")
METHODS = ("template", "learned")
RIM_VOXELS = 2  # 4 mm on the 2 mm model grid
VOXEL_ML = 0.008


def measure(scan: str, method: str, scorer: AnomalyScorer, threshold: float, spec: PreprocessingSpec) -> dict:
    start = time.perf_counter()
    case = preprocess_file(sample_data.fetch(scan), spec=with_brain_mask_method(spec, method))
    seconds = time.perf_counter() - start
    image, mask, _ = case.arrays()
    scores = scorer.score(image, mask, seed=0)
    flagged = scores.anomaly_score > threshold
    rim = mask & ~ndimage.binary_erosion(mask, iterations=RIM_VOXELS)
    return {
        "seconds": seconds, "mask_seconds": case.info["timings_s"]["brain_mask"],
        "mask_source": case.info["mask_source"], "mask": mask,
        "brain_ml": mask.sum() * VOXEL_ML, "flagged_ml": flagged.sum() * VOXEL_ML,
        "rim_flagged_ml": (flagged & rim).sum() * VOXEL_ML, "rim_ml": rim.sum() * VOXEL_ML,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    header = machine()
    bundle = load_bundle(default_model_path())
    threshold = float(bundle.description[SCORING_SECTION]["thresholds"]["val"])
    spec = PreprocessingSpec.from_dict(bundle.description["preprocessing"])
    scorer = AnomalyScorer.from_bundle(bundle, device="cpu")
    rows = []
    for scan in SCANS:
        results = {method: measure(scan, method, scorer, threshold, spec) for method in METHODS}
        agreement = dice(results["template"]["mask"], results["learned"]["mask"])
        for method in METHODS:
            r = results[method]
            rows.append(f"| {scan} | {method} ({r['mask_source']}) | {r['seconds']:.0f} | {r['mask_seconds']:.1f} | "
                        f"{r['brain_ml']:.0f} | {agreement:.3f} | {r['flagged_ml']:.1f} | {r['rim_flagged_ml']:.1f} "
                        f"({100 * r['rim_flagged_ml'] / max(r['flagged_ml'], 1e-9):.0f} %) |")
    totals = "\n".join(rows)
    text = f"""## Brain mask of skull-on scans: template vs learned (deepbet)

`benchmarks/brain_mask.py`; {header}; torch 2 threads. Preprocessing with the default model's spec and
the brain mask of each skull-on scan from the template (affine) or from deepbet 1.0.2 (CPU), then
scored by the bundled default model at its `val` threshold ({threshold:.3f}). Healthy scans: every
flagged voxel is a false positive. Rim = outer 4 mm (2 voxels) of the brain mask. Single runs (no
median): the times are indicative only on this shared machine. MRHead and Colin27 are training
brains of the default model and the ITK scan is its calibration brain, so this compares masks, not
generalisation.

| scan | brain mask | preprocess s | mask step s | brain ml | mask Dice (template vs learned) | flagged ml | in the rim ml |
|---|---|---|---|---|---|---|---|
{totals}
"""
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
