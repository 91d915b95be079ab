"""Training configurations: JSON files in ``AnomalySegLib/configs`` (by name) or anywhere (by path)."""

from __future__ import annotations

import json
from pathlib import Path

from AnomalySegLib.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def available_configs() -> list[str]:
    """Names of the bundled configurations (``recon_paper``, ``recon_cpu``, ...)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> dict:
    """A configuration as a dict: a bundled name (``"recon_cpu"``) or the path of a JSON file.

    Raises:
        InputError: no such name or file, or the file is not a JSON object.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            known = ", ".join(available_configs())
            raise InputError(name_or_path, f"is neither a config file nor a bundled config ({known})")
    if not path.is_file():
        raise InputError(path, "config file not found")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"is not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise InputError(path, "must hold a JSON object")
    config.setdefault("name", path.stem)
    return config
