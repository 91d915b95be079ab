"""Read and write 3D medical volumes (NIfTI, NRRD, MetaImage, DICOM series) with SimpleITK.

Geometry is SimpleITK's (LPS, mm): size, spacing, origin and direction are kept as the file states
them, and the pixel type is kept as stored. Every reading problem becomes an
:class:`~AnomalySegLib.errors.InputError` that names the file and says what is wrong in one line.

ITK reads a truncated NIfTI file without complaint (the missing voxels come back as zeros) and
turns NaN and infinite NIfTI voxels into 0, so NIfTI files are additionally checked with nibabel
against the data size their header promises and, for float data, for non-finite values.
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from AnomalySegLib.errors import AnomalySegError, InputError
from AnomalySegLib.io.atomic import atomic_output
from AnomalySegLib.io.validation import check_declared_size

log = logging.getLogger(__name__)

#: File name endings :func:`read_volume` accepts (matched case-insensitively), longest first.
READ_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File name endings :func:`write_volume` accepts (single-file formats only, so writes stay atomic).
WRITE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")
_COMPRESSED_SUFFIXES = (".nii.gz", ".nrrd")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_DICOM_MAGIC_OFFSET = 128
_CHUNK_BYTES = 1 << 20


def volume_suffix(path: str | Path) -> str | None:
    """The volume file ending of ``path`` (lower case, e.g. ``".nii.gz"``), or ``None`` if unsupported."""
    name = Path(path).name.lower()
    return next((suffix for suffix in READ_SUFFIXES if name.endswith(suffix)), None)


def strip_volume_suffix(path: str | Path) -> str:
    """The file name without its volume ending: ``scan.nii.gz`` → ``scan``; other names unchanged."""
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def dicom_series_ids(folder: str | Path) -> list[str]:
    """The DICOM series found directly in ``folder`` (not in sub-folders); empty if none."""
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr for every non-DICOM folder
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)


def read_volume(path: str | Path) -> sitk.Image:
    """Read a volume file or a DICOM series folder.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file, or a folder
            holding a DICOM series (with several series, the one with most files is read).

    Returns:
        The image as stored: any dimension, pixel type and geometry (validation is separate, see
        :func:`AnomalySegLib.io.validation.validate_volume`).

    Raises:
        InputError: missing, empty, truncated, corrupt, of an unsupported type, or its header
            declares more voxels than :data:`AnomalySegLib.io.validation.MAX_VOXELS`.
    """
    path = Path(path)
    if path.is_dir():
        return _read_dicom_series(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if not path.is_file():
        raise InputError(path, "is not a regular file or folder")
    suffix = volume_suffix(path)
    if suffix is None:
        if _is_dicom_file(path):
            raise InputError(path, "is a single DICOM file; give the folder holding its series instead")
        raise InputError(path, f"has an unsupported file type; supported: {', '.join(READ_SUFFIXES)} "
                         "or a DICOM series folder")
    if path.stat().st_size == 0:
        raise InputError(path, "is empty (0 bytes)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header only: refuse absurd sizes before allocating
        check_declared_size(reader.GetSize(), reader.GetNumberOfComponents(), path)
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(path, _diagnose_read_failure(path, suffix, str(error))) from error
    if suffix in _NIFTI_SUFFIXES:
        _check_nifti_data(path, suffix)
    return image


def write_volume(image: sitk.Image, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``image`` to ``path`` atomically, keeping geometry and pixel type.

    ``.nii.gz`` and ``.nrrd`` are compressed (gzip). NIfTI stores geometry as 32-bit floats, so
    spacing, origin and direction come back to ~1e-6 relative precision; NRRD and MetaImage keep
    them to double precision.

    Raises:
        InputError: ``path`` does not end in a writable volume type.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        AnomalySegError: ITK could not write the file (e.g. disk full, no permission).
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(path, f"cannot be written: output type must be one of {', '.join(WRITE_SUFFIXES)}")
    with atomic_output(path, overwrite) as temp_path:
        try:
            sitk.WriteImage(image, str(temp_path), suffix in _COMPRESSED_SUFFIXES)
        except RuntimeError as error:
            raise AnomalySegError(f"{path}: cannot be written ({_clean_itk_message(str(error), temp_path)})") \
                from error
    return path


def _read_dicom_series(folder: Path) -> sitk.Image:
    series_ids = dicom_series_ids(folder)
    if not series_ids:
        raise InputError(folder, "is a folder but holds no DICOM series (nor is it a volume file)")
    files_by_series = {
        series_id: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)
        for series_id in series_ids
    }
    chosen = max(series_ids, key=lambda series_id: len(files_by_series[series_id]))
    if len(series_ids) > 1:
        log.info("%s: holds %d DICOM series; reading %s (%d files), the largest", folder,
                 len(series_ids), chosen, len(files_by_series[chosen]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files_by_series[chosen])
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(folder, f"DICOM series cannot be read ({_clean_itk_message(str(error), folder)})") \
            from error


def _is_dicom_file(path: Path) -> bool:
    with path.open("rb") as stream:
        stream.seek(_DICOM_MAGIC_OFFSET)
        return stream.read(4) == b"DICM"


def _diagnose_read_failure(path: Path, suffix: str, itk_message: str) -> str:
    """One-line reason why ITK could not read ``path``; gzip problems are named as such."""
    if path.name.lower().endswith(".gz"):
        try:
            _gzip_payload_size(path)
        except InputError as gzip_error:
            return gzip_error.problem
    if "Unable to determine ImageIO reader" in itk_message:
        return f"is not a readable {suffix} file (unknown format or corrupt header)"
    if "MetaImageIO" in itk_message and "cannot be read" in itk_message:
        return "is truncated or corrupt (the MetaImage header or pixel data could not be read)"
    reason = _clean_itk_message(itk_message, path)
    if _TRUNCATION_HINT.search(itk_message):
        return f"is truncated or corrupt ({reason})"
    return f"cannot be read ({reason})"


def _gzip_payload_size(path: Path) -> int:
    """Bytes of ``path`` after gzip decompression.

    Raises:
        InputError: the file is not gzip data, or its stream is truncated or corrupt.
    """
    size = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                size += len(chunk)
    except gzip.BadGzipFile as error:
        raise InputError(path, "is not gzip-compressed although its name ends in .gz") from error
    except EOFError as error:
        raise InputError(path, "is truncated (the gzip stream ends before its end marker)") from error
    except zlib.error as error:
        raise InputError(path, f"is corrupt (gzip data error: {error})") from error
    return size


def _check_nifti_data(path: Path, suffix: str) -> None:
    """Raise if the file holds fewer voxel bytes than its NIfTI header promises, or non-finite floats.

    Both would pass unnoticed otherwise: ITK fills missing voxels with zeros and reads NaN and
    infinite values as 0.
    """
    try:
        proxy = nib.load(str(path)).dataobj
        expected = int(proxy.offset + np.prod(proxy.shape, dtype=np.int64) * proxy.dtype.itemsize)
    except Exception as error:  # nibabel cannot parse what ITK read: ITK's reading stands
        log.debug("%s: NIfTI data check skipped (%s)", path, error)
        return
    actual = _gzip_payload_size(path) if suffix == ".nii.gz" else path.stat().st_size
    if actual < expected:
        raise InputError(path, f"is truncated: its header promises {expected} bytes but it holds {actual}")
    if np.issubdtype(proxy.dtype, np.floating):
        values = np.asarray(proxy.get_unscaled())
        non_finite = int(values.size - np.count_nonzero(np.isfinite(values)))
        if non_finite:
            raise InputError(path, f"has {non_finite} NaN or infinite voxels; all intensities must be finite")


_TRUNCATION_HINT = re.compile(r"fread got only|but received|not read completely|end of file", re.IGNORECASE)
_ITK_LOCATION = re.compile(r"^(Exception thrown in .*|.*\.(cxx|h|hxx):\d+:)$")
_ITK_PREFIX = re.compile(r"^(ITK ERROR|itk::ERROR|sitk::ERROR|ERROR):\s*(\w+\(0x[0-9a-f]+\):\s*)?", re.IGNORECASE)
_NRRD_PREFIX = re.compile(r"^\[nrrd\]\s*\w+:\s*")


def _clean_itk_message(message: str, path: Path) -> str:
    """The informative last line of an ITK exception, without source locations, object ids and the path."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not _ITK_LOCATION.match(line)]
    if not lines:
        return "unknown ITK error"
    useful = _NRRD_PREFIX.sub("", _ITK_PREFIX.sub("", lines[-1]))
    return useful.replace(str(path), "the file").rstrip(".") or "unknown ITK error"
