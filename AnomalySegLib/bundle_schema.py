"""The schema of a bundle's ``model.json``, checked as a whole before any of its values is used.

Known sections are checked for their types; unknown top-level sections stay allowed (free-form).
Every problem is reported at once, one line, naming the key path (``components.recon.weights``).
The rules are few and flat, so they are written here rather than adding a JSON-schema dependency.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from AnomalySegLib.errors import ModelBundleError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Check = Callable[[Any], str | None]  # returns what is wrong, or None


def _is(kind: type | tuple[type, ...], what: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            return f"must be {what}, not a boolean"
        return None if isinstance(value, kind) else f"must be {what}, not {_type_name(value)}"
    return check


def _finite_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"must be a finite number, not {_type_name(value) if not isinstance(value, float) else value}"
    return None


def _weights_file(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a string (a .safetensors file name), not {_type_name(value)}"
    if Path(value).name != value or not value.endswith(".safetensors"):
        return f"must be a plain .safetensors file name inside the bundle, not {value!r}"
    return None


def _sha256(value: Any) -> str | None:
    return None if isinstance(value, str) and _SHA256.match(value) else "must be a sha256 hex digest (64 characters)"


def _storage_dtype(value: Any) -> str | None:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return None
    return f"must be a dtype name or a list of them, not {_type_name(value)}"


def _noise_levels(value: Any) -> str | None:
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                 for v in value):
        return None
    return "must be a non-empty list of positive whole numbers"


_DICT = _is(dict, "an object")
#: Top-level sections other than the format keys and ``components``.
_SECTIONS: dict[str, Check] = {
    "name": _is(str, "a string"),
    "preprocessing": _DICT,
    "noise_levels": _noise_levels,
    "scoring": _DICT,
    "metrics": _DICT,
    "provenance": _DICT,
    "domain": _DICT,
}
_COMPONENT_FIELDS: dict[str, tuple[Check, bool]] = {  # field → (check, required)
    "architecture": (_DICT, True),
    "weights": (_weights_file, True),
    "sha256": (_sha256, True),
    "storage_dtype": (_storage_dtype, False),
}


def check_description(document: Any, path: Path, format_name: str, versions: tuple[int, ...]) -> None:
    """Raise :class:`ModelBundleError` (naming ``path`` and every bad key) unless ``document`` fits the schema."""
    if not isinstance(document, dict) or document.get("format") != format_name:
        raise ModelBundleError(path, f"is not an AnomalySeg model description (format != {format_name!r})")
    version = document.get("format_version")
    if isinstance(version, bool) or version not in versions:
        raise ModelBundleError(
            path, f"has bundle format version {version!r}, which this AnomalySeg does not know "
            f"(it reads version {', '.join(map(str, versions))}); update AnomalySeg")
    problems = []
    components = document.get("components", {})
    if not isinstance(components, dict):
        problems.append(f"components {_DICT(components)}")
        components = {}
    for name, entry in components.items():
        if not isinstance(entry, dict):
            problems.append(f"components.{name} {_DICT(entry)}")
            continue
        for field, (check, required) in _COMPONENT_FIELDS.items():
            if field not in entry:
                if required:
                    problems.append(f"components.{name}.{field} is missing")
                continue
            if (problem := check(entry[field])) is not None:
                problems.append(f"components.{name}.{field} {problem}")
    for section, check in _SECTIONS.items():
        if section in document and (problem := check(document[section])) is not None:
            problems.append(f"{section} {problem}")
    thresholds = document.get("scoring", {}).get("thresholds", {}) if isinstance(document.get("scoring"), dict) else {}
    if not isinstance(thresholds, dict):
        problems.append(f"scoring.thresholds {_DICT(thresholds)}")
    else:
        for preset, value in thresholds.items():
            if (problem := _finite_number(value)) is not None:
                problems.append(f"scoring.thresholds.{preset} {problem}")
    if problems:
        raise ModelBundleError(path, f"does not fit the model description schema: {'; '.join(problems)}")


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
             bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)
