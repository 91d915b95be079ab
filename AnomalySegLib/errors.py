"""Errors the engine raises for problems a user can fix.

Every error names the file (or folder) it is about and the problem, on one line, so that the CLI,
the Slicer module and batch logs can show it as it is.
"""

from __future__ import annotations

from pathlib import Path


class AnomalySegError(Exception):
    """Base class of all errors the engine reports to users (CLI exit status 2)."""


class InputError(AnomalySegError):
    """A user-supplied file is unusable: unreadable, wrong shape, bad values, mismatched geometry.

    Args:
        path: the offending file or folder (``None`` when the problem is not about one file: the
            message is then the problem alone).
        problem: what is wrong, as a short sentence without the path.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class OutputError(AnomalySegError):
    """An output file or folder cannot be written: the path is a file, permission denied, disk full."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class OutputExistsError(AnomalySegError):
    """An output file exists already and overwriting was not asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: exists already (use --overwrite to replace it)")


class ModelBundleError(AnomalySegError):
    """A model bundle is missing, tampered with, or of an unknown format version."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
