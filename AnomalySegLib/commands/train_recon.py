"""``anomalyseg train-recon``: train the Stage I reconstruction model on preprocessed healthy volumes."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.training.cli_options import add_training_arguments, config_with_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-recon",
        help="train the Stage I diffusion model (cDDPM, DDPM or pDDPM) on healthy volumes",
        description="Train the pseudo-healthy reconstruction model on a folder of preprocessed healthy "
        "cases (see 'anomalyseg preprocess') and write a model bundle. Checkpoints and logs "
        "(TensorBoard, metrics.jsonl) go to the work folder; an interrupted run continues with "
        "--resume. Several GPUs: torchrun --nproc-per-node N -m AnomalySegLib train-recon ...",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of preprocessed healthy cases")
    add_training_arguments(parser, config_prefix="recon", default_config="recon_cpu")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from AnomalySegLib.device import set_cpu_threads
    from AnomalySegLib.training.recon_training import train_recon_from_folder

    set_cpu_threads(args.threads)
    config = config_with_overrides(args)
    bundle = train_recon_from_folder(
        args.data,
        args.out,
        config,
        work_dir=args.work_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.no_progress,
    )
    if bundle is not None:
        print(bundle)
    return 0
