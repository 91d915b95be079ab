"""``anomalyseg train-seg``: train the Stage II SegUnet on top of a frozen Stage I model."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.device import set_cpu_threads
from AnomalySegLib.training.config import available_configs, load_config
from AnomalySegLib.training.seg_training import train_seg_from_folders


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-seg",
        help="train the Stage II anomaly segmentation network (SegUnet) on top of a Stage I bundle",
        description="Train the SegUnet on healthy cases with synthetic (DRAEM) anomalies, on labelled cases "
        "(preprocessed with labels, e.g. BraTS/ATLAS), or on a mix of both; Stage I (--recon) stays frozen "
        "and reconstructs every slice on the fly. Writes a bundle with both stages and the scoring "
        "settings; run 'anomalyseg calibrate' next for the threshold. Checkpoints and logs go to the work "
        "folder; an interrupted run continues with --resume. Several GPUs: "
        "torchrun --nproc-per-node N -m AnomalySegLib train-seg ...",
    )
    parser.add_argument("--recon", type=Path, required=True, help="Stage I model bundle ('train-recon')")
    parser.add_argument("--healthy", type=Path, help="folder of preprocessed healthy cases (synthetic anomalies)")
    parser.add_argument("--labels", type=Path, help="folder of preprocessed cases with labels.nii.gz")
    parser.add_argument(
        "--synthetic-fraction", type=float,
        help="share of each batch from healthy cases with synthetic anomalies when both --healthy and "
        "--labels are given (default: the config's)",
    )
    parser.add_argument("--out", type=Path, required=True, help="model bundle folder to write")
    parser.add_argument(
        "--config", default="seg_cpu",
        help=f"bundled config ({', '.join(c for c in available_configs() if c.startswith('seg'))}) "
        "or a JSON file (default: %(default)s)",
    )
    parser.add_argument("--work-dir", type=Path, help="checkpoints and logs (default: OUT.training)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the work folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--max-steps", type=int, help="override the config's number of steps")
    parser.add_argument("--batch-size", type=int, help="override the config's batch size")
    parser.add_argument("--dice-weight", type=float, help="override the config's Dice-loss weight (0: BCE only)")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="override autocast precision")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    set_cpu_threads(args.threads)
    config = load_config(args.config)
    training = config.setdefault("training", {})
    overrides = (
        ("max_steps", args.max_steps), ("batch_size", args.batch_size), ("seed", args.seed),
        ("precision", args.precision), ("dice_weight", args.dice_weight),
        ("synthetic_fraction", args.synthetic_fraction),
    )
    for key, value in overrides:
        if value is not None:
            training[key] = value
    bundle = train_seg_from_folders(
        args.recon, args.healthy, args.labels, args.out, config,
        work_dir=args.work_dir, resume=args.resume, overwrite=args.overwrite,
        device=args.device, progress=not args.no_progress,
    )
    if bundle is not None:
        print(bundle)
    return 0
