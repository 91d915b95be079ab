"""What every ``anomalyseg`` command shares: exit statuses and the compute options.

Torch-free: ``anomalyseg --help`` and every command's ``--help`` build their parsers without
loading torch (commands import their engine modules inside ``run``).
"""

from __future__ import annotations

import argparse

from AnomalySegLib.choices import PRECISIONS

#: Exit statuses of ``anomalyseg``: all done; some cases of a batch failed (the others are done);
#: a problem the user can fix (one line on stderr, nothing done); interrupted by Ctrl-C.
EXIT_OK = 0
EXIT_SOME_CASES_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def add_compute_options(parser: argparse.ArgumentParser, precision_default: str | None = "auto") -> None:
    """``--device``, ``--precision`` and ``--threads``.

    Args:
        precision_default: ``None`` where an unset precision means "the config's" (training).
    """
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:1, mps (default: auto)")
    default_text = "the config's" if precision_default is None else precision_default
    parser.add_argument("--precision", default=precision_default, choices=PRECISIONS,
                        help="auto: bf16/fp16 autocast on a GPU, bf16 on a CPU with native bf16 (AVX512-BF16, "
                             f"AMX-BF16), else fp32 (default: {default_text})")
    parser.add_argument("--threads", type=int,
                        help="CPU threads (default: all cores, or $ANOMALYSEG_THREADS)")


def add_seed_option(parser: argparse.ArgumentParser, default: int | None = 0) -> None:
    """``--seed``: the seed of the diffusion noise (``None``: the config's, in training)."""
    default_text = "the config's" if default is None else str(default)
    parser.add_argument("--seed", type=int, default=default,
                        help=f"random seed; the same seed gives the same result (default: {default_text})")


def exit_status(all_ok: bool) -> int:
    """The exit status of a batch command: :data:`EXIT_OK` or :data:`EXIT_SOME_CASES_FAILED`."""
    return EXIT_OK if all_ok else EXIT_SOME_CASES_FAILED
