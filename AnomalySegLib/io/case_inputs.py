"""Find the cases a command should process: one scan, a folder of scans, a list file, DICOM folders.

Each case is a volume file or a DICOM series folder with a case id taken from its name
(``scan.nii.gz`` → ``scan``, DICOM folder ``patient7/`` → ``patient7``). Case ids name output files
and folders, so two inputs with the same id (ignoring letter case, for case-insensitive file
systems) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from AnomalySegLib.errors import InputError
from AnomalySegLib.io.segmentation_io import SEGMENTATION_SUFFIX
from AnomalySegLib.io.volume_io import READ_SUFFIXES, dicom_series_ids, strip_volume_suffix, volume_suffix

LIST_SUFFIX = ".txt"
_SUPPORTED = (f"a volume file ({', '.join(READ_SUFFIXES)}), a DICOM series folder, a folder of those "
              f"or a {LIST_SUFFIX} list")


@dataclass(frozen=True)
class CaseInput:
    """One case to process: ``path`` is a volume file or a DICOM series folder."""

    case_id: str
    path: Path


def companion_files(cases: list[CaseInput], given: str | Path | None, what: str) -> dict[str, Path]:
    """Case id → its ``what`` file (``"mask"``, ``"label"``) from an option such as ``--mask``.

    The one matching rule of every command: a file is allowed for a single case; a folder must hold
    one volume file per case, named like the case (``<case_id>.nii.gz``, any volume type) or
    ``<case_id>_<what>.*`` (also ``-<what>``, ``_<what>s``, ``-<what>s``). A case without one is an error.

    Raises:
        InputError: ``given`` does not exist; one file for several cases; a case has no file.
    """
    if given is None:
        return {}
    given = Path(given)
    if not given.exists():
        raise InputError(given, "does not exist")
    if given.is_file():
        if len(cases) != 1:
            raise InputError(given, f"is one {what} file but the input has {len(cases)} cases; give a "
                             f"folder of {what} files named like the cases")
        return {cases[0].case_id: given}
    by_id: dict[str, Path] = {}
    for path in sorted(given.iterdir()):
        if volume_suffix(path) is None or path.name.startswith("."):
            continue
        name = strip_volume_suffix(path)
        by_id[name] = path
        for suffix in (f"_{what}", f"-{what}", f"_{what}s", f"-{what}s"):
            if name.endswith(suffix):
                by_id.setdefault(name[: -len(suffix)], path)
    missing = [case.case_id for case in cases if case.case_id not in by_id]
    if missing:
        raise InputError(given, f"holds no {what} file for case(s) {', '.join(missing[:5])}"
                         f"{' …' if len(missing) > 5 else ''} (expected <case_id>.nii.gz or <case_id>_{what}.*)")
    return {case.case_id: by_id[case.case_id] for case in cases}


def discover_cases(input_path: str | Path) -> list[CaseInput]:
    """The cases named by ``input_path``.

    ``input_path`` may be:

    * a volume file → that one case;
    * a folder holding a DICOM series directly → that one case, named after the folder;
    * a folder of volume files and/or DICOM series sub-folders → one case each, sorted by name
      (not recursive; hidden files and ``.seg.nrrd`` segmentations are skipped);
    * a ``.txt`` file listing one volume file or DICOM folder per line (relative paths are relative
      to the list file's folder; blank lines and lines starting with ``#`` are skipped) → in list order.

    Raises:
        InputError: the input is missing, unsupported or names no case; a listed path is missing;
            two cases get the same id.
    """
    input_path = Path(input_path)
    if not input_path.exists():
        raise InputError(input_path, "does not exist")
    if input_path.is_dir():
        cases = _cases_in_folder(input_path)
    elif input_path.name.lower().endswith(LIST_SUFFIX):
        cases = _cases_in_list(input_path)
    elif volume_suffix(input_path) is not None:
        cases = [CaseInput(strip_volume_suffix(input_path), input_path)]
    else:
        raise InputError(input_path, f"is not a supported input; give {_SUPPORTED}")
    _check_unique_ids(input_path, cases)
    return cases


def _cases_in_folder(folder: Path) -> list[CaseInput]:
    entries = sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
    volume_files = [entry for entry in entries if entry.is_file() and _is_volume_file(entry)]
    if dicom_series_ids(folder):
        if volume_files:
            raise InputError(folder, "holds both a DICOM series and volume files; give one of them")
        return [CaseInput(folder.name, folder)]
    cases = []
    for entry in entries:
        if entry in volume_files:
            cases.append(CaseInput(strip_volume_suffix(entry), entry))
        elif entry.is_dir() and dicom_series_ids(entry):
            cases.append(CaseInput(entry.name, entry))
    if not cases:
        raise InputError(folder, f"holds no volume file ({', '.join(READ_SUFFIXES)}) and no DICOM series "
                         "folder")
    return cases


def _cases_in_list(list_file: Path) -> list[CaseInput]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(list_file, f"cannot be read as a text list of inputs ({error})") from error
    cases = []
    for line_number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = list_file.parent / path
        if not path.exists():
            raise InputError(list_file, f"line {line_number}: {entry} does not exist")
        if path.is_dir():
            if not dicom_series_ids(path):
                raise InputError(list_file, f"line {line_number}: {entry} is a folder without a DICOM series")
            cases.append(CaseInput(path.name, path))
        elif _is_volume_file(path):
            cases.append(CaseInput(strip_volume_suffix(path), path))
        else:
            raise InputError(list_file, f"line {line_number}: {entry} is not a volume file "
                             f"({', '.join(READ_SUFFIXES)}) or DICOM series folder")
    if not cases:
        raise InputError(list_file, "lists no input (only blank lines and comments)")
    return cases


def _is_volume_file(path: Path) -> bool:
    return volume_suffix(path) is not None and not path.name.lower().endswith(SEGMENTATION_SUFFIX)


def _check_unique_ids(input_path: Path, cases: list[CaseInput]) -> None:
    seen: dict[str, CaseInput] = {}
    for case in cases:
        key = case.case_id.casefold()
        if key in seen:
            raise InputError(input_path, f"two inputs get the case id '{case.case_id}': {seen[key].path} and "
                             f"{case.path}; rename one")
        seen[key] = case
