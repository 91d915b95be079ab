"""Write output files atomically and never overwrite one silently.

A writer gets a temporary path next to the target (same folder, so :func:`os.replace` is an atomic
rename on the same file system) with the target's suffixes (``.nii.gz`` stays ``.nii.gz``, so
SimpleITK and slicerio pick the right format). Only a complete file is renamed onto the target; on
any error the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from AnomalySegLib.errors import OutputExistsError


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
    """
    target = check_writable(path, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffixes)] if suffixes else target.name
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffixes, dir=target.parent)
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
