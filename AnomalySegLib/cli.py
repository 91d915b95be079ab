"""The ``anomalyseg`` command line: one entry point, one subcommand per module in ``commands/``.

Command modules import only light modules at the top and their engine modules inside ``run``, so
building the parser (``anomalyseg --help``, any ``--help``) never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import Sequence

from AnomalySegLib import __version__, commands
from AnomalySegLib.cli_common import EXIT_INTERRUPTED, EXIT_USER_ERROR
from AnomalySegLib.errors import AnomalySegError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand found in :mod:`AnomalySegLib.commands`."""
    parser = argparse.ArgumentParser(
        prog="anomalyseg",
        description="Find and outline abnormal tissue in brain MRI (SADM: diffusion reconstruction "
        "+ supervised residual U-Net).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the process exit status.

    Problems the user can fix (:class:`AnomalySegError`) are printed as one line on stderr with
    exit status 2; anything else is a bug and keeps its traceback.
    """
    _tolerate_narrow_terminals()
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except AnomalySegError as error:
        print(f"anomalyseg {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"anomalyseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _tolerate_narrow_terminals() -> None:
    """Never fail on printing: messages use "×", "±" and "⌈⌉", which an ASCII locale cannot encode.

    Characters the terminal's encoding lacks are written as backslash escapes instead of raising
    ``UnicodeEncodeError`` (the encoding itself is left alone, so ``PYTHONIOENCODING`` still rules).
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main_exit() -> None:
    """Console-script entry point: ``sys.exit(main())``."""
    sys.exit(main())
