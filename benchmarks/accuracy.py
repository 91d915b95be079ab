#!/usr/bin/env python
"""Accuracy of a model bundle and its ablations on the real data obtainable here (the paper's metrics).

Three evaluation sets, all on the model grid (96×96×50, the paper's protocol), scored once per volume
(:func:`AnomalySegLib.evaluation.evaluate_cases` gives SADM = combined AS, Stage I only = x̃, U-Net only = ŷ
from one pass):

- **tumour**: MRBrainTumor1 (tumour = label 9) and MRBrainTumor2 (label 1), never used in training;
- **synthetic**: slice-wise DRAEM anomalies (the paper's synthetic set) on healthy real T1 volumes, seeded
  (seeds differ from the default model's calibration draws);
- **healthy**: the same healthy volumes unchanged: voxel FPR inside the brain at the calibrated threshold.

Healthy hosts: ``itk_kmeans_t1`` (held out from the default model's training but used for its calibration)
and ``nibabel_anatomical`` (unseen, but low resolution). Preprocessed arrays are cached in ``--work``.

Prints the table; writes it as the ``<!-- accuracy -->`` section of BENCHMARKS.md only for the bundled
default model (or with ``--write`` for another model, named in the section), and with ``--reports DIR``
the full per-set reports (Markdown, CSV, JSON, PR curve).

Usage::

    python benchmarks/accuracy.py [--model Resources/Models/default] [--reports DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import sys
import time
from pathlib import Path

import torch

from AnomalySegLib import sample_data
from AnomalySegLib.anomalies import DraemAnomalyGenerator
from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.evaluation import EvaluationResult, evaluate_cases, resolve_threshold, write_report
from AnomalySegLib.evaluation.evaluate import VARIANT_NAMES
from AnomalySegLib.pipeline import default_model_path
from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase
from AnomalySegLib.preprocessing.model_space_cache import cached_case
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.scoring.volume import AnomalyScorer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_report import machine, publish, shown_path  # noqa: E402

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
TUMOUR_CASES = {"mrbraintumor1": 9, "mrbraintumor2": 1}
HEALTHY_HOSTS = ("itk_kmeans_t1", "nibabel_anatomical")
SYNTHETIC_DRAWS = 2
SYNTHETIC_SEED = 7000
LOG = logging.getLogger("accuracy")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: the bundled default model)")
    parser.add_argument("--work", type=Path, default=REPOSITORY_ROOT / ".cache" / "accuracy",
                        help="cache of preprocessed arrays (default: %(default)s)")
    parser.add_argument("--reports", type=Path, help="also write the per-set reports into this folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md even for a non-default model")
    parser.add_argument("--no-write", action="store_true", help="never write BENCHMARKS.md")
    return parser.parse_args(argv)


def preprocessed(name: str, work: Path, labels: tuple[str, int] | None = None) -> ModelSpaceCase:
    """``name`` from :mod:`sample_data` in model space, cached under ``work`` (keyed by the spec)."""
    labels_path, values = (None, None) if labels is None else (sample_data.fetch(labels[0]), [labels[1]])
    return cached_case(name, sample_data.fetch(name), work, PreprocessingSpec(), labels_path, values)


def with_draem(host: ModelSpaceCase, draw: int) -> ModelSpaceCase:
    """``host`` with seeded slice-wise DRAEM anomalies inside the brain."""
    images = torch.from_numpy(host.image)[:, None]
    masks = torch.from_numpy(host.mask)[:, None]
    anomalies = DraemAnomalyGenerator()(images, masks, torch.Generator().manual_seed(SYNTHETIC_SEED + draw))
    return ModelSpaceCase(f"{host.case_id}_draem{draw}", anomalies.images[:, 0].numpy(), host.mask,
                          anomalies.masks[:, 0].numpy() > 0)


def cell(summary: dict, variant: str, key: str, digits: int = 1) -> str:
    stats = summary.get(variant, {}).get(key)
    if not stats or stats["n"] == 0 or math.isnan(stats["mean"]):
        return "–"
    return f"{100 * stats['mean']:.{digits}f} ± {100 * stats['std']:.{digits}f}"


def table(results: dict[str, EvaluationResult]) -> str:
    lines = ["| model | set | ⌈Dice⌉ | AUPRC | AUROC | Dice@val | lesions found | healthy FPR@val |",
             "|---|---|---|---|---|---|---|---|"]
    healthy = results["healthy"].summary()
    for variant in results["tumour"].variants:
        for name in ("tumour", "synthetic"):
            summary = results[name].summary()
            fpr = cell(healthy, variant, "healthy_fpr", 2) if name == "tumour" else ""
            lines.append(f"| {VARIANT_NAMES[variant]} | {name} | {cell(summary, variant, 'best_dice')} | "
                         f"{cell(summary, variant, 'auprc')} | {cell(summary, variant, 'auroc')} | "
                         f"{cell(summary, variant, 'dice')} | {cell(summary, variant, 'detection_rate', 0)} | {fpr} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    load = machine()
    model = args.model or default_model_path()
    is_default = args.model is None or Path(args.model).resolve() == Path(default_model_path()).resolve()
    bundle = load_bundle(model)
    threshold, preset = resolve_threshold(bundle, None)
    scorer = AnomalyScorer.from_bundle(bundle, device=args.device)

    start = time.perf_counter()
    tumour = [preprocessed(name, args.work, (f"{name}_labels", value)) for name, value in TUMOUR_CASES.items()]
    hosts = [preprocessed(name, args.work) for name in HEALTHY_HOSTS]
    synthetic = [with_draem(host, draw) for host in hosts for draw in range(SYNTHETIC_DRAWS)]
    preprocessing_s = time.perf_counter() - start

    start = time.perf_counter()
    results = {}
    for name, cases in (("tumour", tumour), ("synthetic", synthetic), ("healthy", hosts)):
        per_case, curves = evaluate_cases(scorer, cases, threshold, progress=lambda case: LOG.info("scoring %s", case))
        variants = [v for v in ("combined", "stage1", "unet") if any(v in c.metrics for c in per_case)]
        results[name] = EvaluationResult(str(model), name, threshold, preset, 0, variants, per_case,
                                         pr_curves=curves)
        if args.reports:
            write_report(results[name], args.reports / name, overwrite=True)
    scoring_s = time.perf_counter() - start

    body = table(results)
    per_case = "; ".join(
        f"{c.case_id} ⌈Dice⌉ {100 * c.metrics['combined']['best_dice']:.1f} %, Dice@val "
        f"{100 * c.metrics['combined']['dice']:.1f} %" for c in results["tumour"].cases
        if not math.isnan(c.metrics["combined"].get("dice", math.nan))
    )
    name = bundle.description.get("name", Path(model).name)
    threshold_text = "none" if threshold is None else f"{threshold:.4f} ({preset})"
    text = "\n".join([
        "## Accuracy (paper metrics, model grid 96×96×50)",
        "",
        f"Model `{name}` (`{shown_path(model)}`), threshold {threshold_text}; measured "
        f"{datetime.date.today().isoformat()} on {load}. Preprocessing {preprocessing_s:.0f} s (cached "
        f"afterwards), scoring {scoring_s:.0f} s for {len(tumour) + len(synthetic) + len(hosts)} volumes.",
        "",
        "Command: `.venv/bin/python benchmarks/accuracy.py" + ("" if is_default else f" --model {shown_path(model)}") + "`",
        "",
        "Sets: **tumour** = MRBrainTumor1 (label 9) + MRBrainTumor2 (label 1), never trained on; **synthetic** = "
        f"slice-wise DRAEM anomalies ({SYNTHETIC_DRAWS} seeded draws) on {', '.join(HEALTHY_HOSTS)}; **healthy FPR** "
        f"= in-brain voxel false-positive rate on those volumes unchanged. Mean ± std over volumes, in %. "
        "`itk_kmeans_t1` also calibrated the default model's thresholds, so its Dice@val and FPR are optimistic. "
        "Compare with the paper's table (`docs/evaluation.md`, \"The paper's results\") only loosely: "
        "2 tumour volumes of one patient, not 5 folds of BraTS21.",
        "",
        body,
        "",
        f"Per case (SADM): {per_case}.",
    ])
    publish("accuracy", text, write=not args.no_write and (is_default or args.write))
    return 0


if __name__ == "__main__":
    sys.exit(main())
