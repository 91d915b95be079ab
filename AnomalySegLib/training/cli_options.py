"""Command-line options shared by the training commands (``train-recon``, ``train-seg``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib.cli_common import add_compute_options, add_seed_option
from AnomalySegLib.training.config import available_configs, load_config

#: Options that override a key of the config's ``"training"`` section (option dest → key).
COMMON_OVERRIDES = ("max_steps", "batch_size", "seed", "precision")


def add_training_arguments(parser: argparse.ArgumentParser, config_prefix: str, default_config: str) -> None:
    """``--config``, the output/work/resume options, the common overrides and the device options."""
    parser.add_argument("--out", type=Path, required=True, help="model bundle folder to write")
    parser.add_argument(
        "--config", default=default_config,
        help=f"bundled config ({', '.join(c for c in available_configs() if c.startswith(config_prefix))}) "
        "or a JSON file (default: %(default)s)",
    )
    parser.add_argument("--work-dir", type=Path, help="checkpoints and logs (default: OUT.training)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the work folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--max-steps", type=int, help="override the config's number of steps")
    parser.add_argument("--batch-size", type=int, help="override the config's batch size")
    add_seed_option(parser, default=None)
    add_compute_options(parser, precision_default=None)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_with_overrides(args: argparse.Namespace, extra_overrides: tuple[str, ...] = ()) -> dict:
    """The ``--config`` configuration with the options given on the command line applied."""
    config = load_config(args.config)
    training = config.setdefault("training", {})
    for key in (*COMMON_OVERRIDES, *extra_overrides):
        value = getattr(args, key)
        if value is not None:
            training[key] = value
    return config
