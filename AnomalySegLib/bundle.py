"""The model bundle: everything a trained AnomalySeg model needs, in one folder, without pickle.

Layout::

    <bundle>/model.json               description (format, components, free-form sections)
    <bundle>/<component>.safetensors  weights of each named component ("recon", "seg", ...)

``model.json``::

    {
      "format": "anomalyseg-model-bundle",
      "format_version": 1,
      "components": {
        "recon": {"architecture": {...}, "weights": "recon.safetensors",
                  "sha256": "<hex>", "storage_dtype": "float32"},
        ...
      },
      "preprocessing": {...}, "noise_levels": [250, 500, 750], "scoring": {...},
      "metrics": {...}, "provenance": {...}            # free-form top-level sections
    }

Loading checks the format name and version and the sha256 of every weight file, and reads weights
with ``safetensors`` only. Saving writes a temporary sibling folder and renames it into place, so a
bundle on disk is always complete.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from AnomalySegLib.bundle_schema import check_description
from AnomalySegLib.errors import ModelBundleError, OutputExistsError
from AnomalySegLib.io.atomic import atomic_folder
from AnomalySegLib.io.checksum import file_sha256

FORMAT_NAME = "anomalyseg-model-bundle"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
DESCRIPTION_FILE = "model.json"
RESERVED_KEYS = ("format", "format_version", "components")


@dataclass
class BundleComponent:
    """One network of a bundle: its architecture config and its weights (a state dict)."""

    architecture: dict
    state_dict: dict[str, torch.Tensor]
    sha256: str | None = None  # of the weight file as stored; set when saved or loaded


@dataclass
class ModelBundle:
    """A model bundle in memory.

    Attributes:
        description: free-form top-level sections of ``model.json`` (``"preprocessing"``,
            ``"noise_levels"``, ``"scoring"``, ``"metrics"``, ``"provenance"``, ...), JSON-serialisable.
        components: named networks, e.g. ``"recon"`` (Stage I) and ``"seg"`` (Stage II).
        path: the folder it was loaded from or saved to (``None`` for a new bundle).
    """

    description: dict = field(default_factory=dict)
    components: dict[str, BundleComponent] = field(default_factory=dict)
    path: Path | None = None

    def add_component(
        self, name: str, architecture: dict, state_dict: dict[str, torch.Tensor], replace: bool = False
    ) -> None:
        """Add (or with ``replace=True`` replace) the component ``name``; tensors are detached to CPU."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"component name must be alphanumeric (with - or _), not {name!r}")
        if name in self.components and not replace:
            raise ValueError(f"the bundle has a component {name!r} already")
        weights = {key: value.detach().to("cpu").contiguous() for key, value in state_dict.items()}
        self.components[name] = BundleComponent(copy.deepcopy(architecture), weights)

    def component(self, name: str) -> BundleComponent:
        """The component ``name``; :class:`ModelBundleError` naming the bundle if it has none."""
        if name not in self.components:
            where = self.path if self.path is not None else "<unsaved bundle>"
            raise ModelBundleError(
                where, f"has no {name!r} component (it has: {', '.join(sorted(self.components)) or 'none'})"
            )
        return self.components[name]

    @property
    def name(self) -> str:
        """The model's name: the ``"name"`` section, else the provenance's, else the folder's name."""
        provenance = self.section("provenance")
        return str(self.description.get("name") or provenance.get("name")
                   or (self.path.name if self.path else "unsaved"))

    def section(self, name: str) -> dict:
        """The top-level section ``name`` of ``model.json`` (``{}`` when absent; the schema made it an object)."""
        value = self.description.get(name, {})
        return value if isinstance(value, dict) else {}

    @property
    def noise_levels(self) -> tuple[int, ...] | None:
        """Stage I's noise levels, or ``None`` when the bundle does not say (the default applies)."""
        levels = self.description.get("noise_levels")
        return None if levels is None else tuple(levels)

    @property
    def thresholds(self) -> dict[str, float]:
        """The calibrated thresholds of the ``"scoring"`` section, by preset name (may be empty)."""
        return {name: float(value) for name, value in self.section("scoring").get("thresholds", {}).items()}

    def fingerprint(self) -> str | None:
        """One sha256 over the checksums of every component's weights (``None`` for an unsaved bundle).

        Two bundles with the same fingerprint compute the same maps, whatever their folder or name.
        """
        digests = [f"{name}:{component.sha256}" for name, component in sorted(self.components.items())]
        if not digests or any(component.sha256 is None for component in self.components.values()):
            return None
        return hashlib.sha256(";".join(digests).encode("utf-8")).hexdigest()

    def derive(self) -> ModelBundle:
        """A copy to extend (e.g. Stage II: Stage I components + ``"seg"`` + ``"scoring"``)."""
        return ModelBundle(
            description=copy.deepcopy(self.description),
            components={
                name: BundleComponent(copy.deepcopy(c.architecture), dict(c.state_dict), c.sha256)
                for name, c in self.components.items()
            },
        )


def save_bundle(
    bundle: ModelBundle, folder: str | Path, overwrite: bool = False, storage_dtype: torch.dtype | None = None
) -> Path:
    """Write ``bundle`` to ``folder`` atomically; returns the folder.

    Args:
        overwrite: replace an existing folder (otherwise :class:`OutputExistsError`); files in it
            that are not part of a bundle (``MODEL_CARD.md``, notes) are kept.
        storage_dtype: e.g. ``torch.float16`` to store floating-point weights at half size (loaded
            back as stored; ``load_state_dict`` casts them into the model's dtype). ``None``: as they are.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise OutputExistsError(folder)
    for key in RESERVED_KEYS:
        if key in bundle.description:
            raise ValueError(f"'{key}' is reserved in model.json; it cannot be a description section")
    with atomic_folder(folder, overwrite, keep=_not_owned_by_bundle) as staging:
        described_components = {}
        for name, component in bundle.components.items():
            weights_name = f"{name}.safetensors"
            tensors = {
                key: value.to(storage_dtype) if storage_dtype is not None and value.is_floating_point() else value
                for key, value in component.state_dict.items()
            }
            save_file(tensors, str(staging / weights_name), metadata={"component": name})
            digest = file_sha256(staging / weights_name)
            component.sha256 = digest
            dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()})
            described_components[name] = {
                "architecture": component.architecture,
                "weights": weights_name,
                "sha256": digest,
                "storage_dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
            }
        description = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "components": described_components,
            **bundle.description,
        }
        text = json.dumps(description, indent=2, sort_keys=False, allow_nan=False)
        (staging / DESCRIPTION_FILE).write_text(text + "\n", encoding="utf-8")
    bundle.path = folder
    return folder


def load_bundle(folder: str | Path) -> ModelBundle:
    """Read and verify a bundle folder.

    Raises:
        ModelBundleError: missing folder or ``model.json``, unknown format or version, a description
            that does not fit the schema (:mod:`AnomalySegLib.bundle_schema`), a weight file missing,
            tampered with (sha256 mismatch) or unreadable; the message names the file.
    """
    folder = Path(folder)
    description_path = folder / DESCRIPTION_FILE
    if not folder.is_dir():
        raise ModelBundleError(folder, "is not a model bundle folder")
    if not description_path.is_file():
        raise ModelBundleError(description_path, "missing: the folder is not an AnomalySeg model bundle")
    try:
        description = json.loads(description_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelBundleError(description_path, f"is not valid JSON ({error})") from error
    check_description(description, description_path, FORMAT_NAME, SUPPORTED_FORMAT_VERSIONS)
    components: dict[str, BundleComponent] = {}
    for name, entry in description.get("components", {}).items():
        components[name] = _load_component(folder, name, entry)
    sections = {key: value for key, value in description.items() if key not in RESERVED_KEYS}
    return ModelBundle(description=sections, components=components, path=folder)


def _load_component(folder: Path, name: str, entry: dict) -> BundleComponent:
    """One component whose ``model.json`` entry fits the schema: its weight file, verified and read."""
    weights_name, expected, architecture = entry["weights"], entry["sha256"], entry["architecture"]
    weights_path = folder / weights_name
    if not weights_path.is_file():
        raise ModelBundleError(weights_path, f"missing (weights of component {name!r})")
    actual = file_sha256(weights_path)
    if actual != expected:
        raise ModelBundleError(
            weights_path, f"checksum mismatch (sha256 {actual[:12]}…, model.json says {str(expected)[:12]}…): "
            "the weight file was changed or damaged; refusing to load it",
        )
    try:
        state_dict = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelBundleError(weights_path, f"cannot be read as safetensors ({error})") from error
    return BundleComponent(architecture=architecture, state_dict=state_dict, sha256=actual)


def _not_owned_by_bundle(entry: Path) -> bool:
    """Files a bundle folder may hold besides the bundle (a model card, notes): kept when re-saving."""
    return entry.name != DESCRIPTION_FILE and not entry.name.endswith(".safetensors")
