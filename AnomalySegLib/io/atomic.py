"""Write output files and folders atomically and never overwrite one silently.

A writer gets a temporary path next to the target (same folder, so :func:`os.replace` is an atomic
rename on the same file system) with the target's suffixes (``.nii.gz`` stays ``.nii.gz``, so
SimpleITK and slicerio pick the right format). Only a complete file is renamed onto the target; on
any error the temporary file is removed and the target is left as it was. :func:`atomic_folder` does
the same for a whole folder (model bundles, case folders, model-space outputs). Temporary names
start with ``.<name>.`` (see :func:`temporary_siblings`), so leftovers of a killed process can be
found and removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from AnomalySegLib.errors import OutputError, OutputExistsError


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is false; returns it as a Path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write instead of ``path``; it becomes ``path`` when the block succeeds.

    Missing parent folders are created. The temporary file is named ``.<name>.<random><suffixes>``
    in the target's folder.

    Raises:
        OutputExistsError: ``path`` exists (checked before and again after writing) and
            ``overwrite`` is false.
        OutputError: the folder cannot be created or written into.
    """
    target = check_writable(path, overwrite)
    suffixes = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffixes)] if suffixes else target.name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffixes, dir=target.parent)
    except OSError as error:
        raise OutputError(target, f"cannot be written ({error.strerror or error})") from error
    os.close(descriptor)
    temp_path = Path(temp_name)
    try:
        yield temp_path
        if not temp_path.is_file():
            raise FileNotFoundError(f"{temp_path}: the writer produced no file")
        check_writable(target, overwrite)  # another process may have written it meanwhile
        apply_default_permissions(temp_path)
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path, overwrite: bool = False,
                  keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty staging folder to fill instead of ``path``; it becomes ``path`` when the block succeeds.

    An existing ``path`` (only with ``overwrite``) is swapped out and removed after the new folder is
    in place, so readers see the old folder or the new one, never a mixture. Files and folders of the
    old folder for which ``keep(entry)`` is true and that the writer did not write are carried over
    (e.g. a model card next to a bundle's weights). The new folder and what the writer put in it get
    the usual umask-based permissions (``mkdtemp`` would leave them private).

    Raises:
        OutputExistsError: ``path`` exists (checked before and again after writing) and
            ``overwrite`` is false.
    """
    target = check_writable(path, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as error:
        raise OutputError(target, f"cannot be written ({error.strerror or error})") from error
    try:
        yield staging
        check_writable(target, overwrite)
        if keep is not None and target.is_dir():
            for entry in target.iterdir():
                if keep(entry) and not (staging / entry.name).exists():
                    copy = shutil.copytree if entry.is_dir() else shutil.copy2
                    copy(entry, staging / entry.name)
        for written in [staging, *staging.rglob("*")]:
            if not written.is_symlink():
                apply_default_permissions(written)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` onto ``target``; an existing target is moved aside first, removed after."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rmdir(retired)
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def temporary_siblings(path: str | Path) -> list[Path]:
    """Temporary files and folders :func:`atomic_output`/:func:`atomic_folder` left for ``path``.

    Only a process killed while writing leaves them (``.<stem>.<random><suffixes>``, ``.<name>.<random>.tmp``).
    """
    target = Path(path)
    suffixes = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffixes)] if suffixes else target.name
    if not target.parent.is_dir():
        return []
    patterns = {f".{stem}.*{suffixes}", f".{target.name}.*.tmp", f".{target.name}.*.old"}
    return sorted({found for pattern in patterns for found in target.parent.glob(pattern)})


def ensure_output_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove it can be written into (a probe file is made and removed).

    Raises:
        OutputError: ``folder`` is a file, cannot be created, or cannot be written into; one line.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(folder, "is a file, not a folder; give a folder for the outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        verb = "cannot be written into" if folder.is_dir() else "cannot be created"
        raise OutputError(folder, f"{verb} ({error.strerror or error})") from error
    return folder


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (JSON, CSV, reports); returns the path."""
    with atomic_output(path, overwrite) as temp_path:
        temp_path.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_output(path, overwrite) as temp_path:
        temp_path.write_bytes(data)
    return Path(path)


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = _read_umask()


def apply_default_permissions(path: Path) -> None:
    """``mkstemp``/``mkdtemp`` create owner-only files and folders; give ``path`` the usual umask-based mode."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)
