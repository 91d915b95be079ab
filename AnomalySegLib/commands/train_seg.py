"""``anomalyseg train-seg``: train the Stage II SegUnet on top of a frozen Stage I model."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.training.cli_options import add_training_arguments, config_with_overrides


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
    parser.add_argument("--dice-weight", type=float, help="override the config's Dice-loss weight (0: BCE only)")
    add_training_arguments(parser, config_prefix="seg", default_config="seg_cpu")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.device import set_cpu_threads
    from AnomalySegLib.training.seg_training import train_seg_from_folders

    set_cpu_threads(args.threads)
    config = config_with_overrides(args, extra_overrides=("dice_weight", "synthetic_fraction"))
    bundle = train_seg_from_folders(
        args.recon, args.healthy, args.labels, args.out, config,
        work_dir=args.work_dir, resume=args.resume, overwrite=args.overwrite,
        device=args.device, progress=not args.no_progress,
    )
    if bundle is not None:
        print(bundle)
    return 0
