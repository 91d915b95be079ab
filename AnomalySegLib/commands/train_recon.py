"""``anomalyseg train-recon``: train the Stage I reconstruction model on preprocessed healthy volumes."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.device import set_cpu_threads
from AnomalySegLib.training.config import available_configs, load_config
from AnomalySegLib.training.recon_training import train_recon_from_folder


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
    parser.add_argument("--out", type=Path, required=True, help="model bundle folder to write")
    parser.add_argument(
        "--config",
        default="recon_cpu",
        help=f"bundled config ({', '.join(c for c in available_configs() if c.startswith('recon'))}) "
        "or a JSON file (default: %(default)s)",
    )
    parser.add_argument("--work-dir", type=Path, help="checkpoints and logs (default: OUT.training)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the work folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--max-steps", type=int, help="override the config's number of steps")
    parser.add_argument("--batch-size", type=int, help="override the config's batch size")
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
    for key, value in (("max_steps", args.max_steps), ("batch_size", args.batch_size), ("seed", args.seed),
                       ("precision", args.precision)):
        if value is not None:
            training[key] = value
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
