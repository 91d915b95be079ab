"""Package namespaces whose names load on first use (PEP 562).

A package that re-exports names from heavy submodules (torch, SimpleITK) would import all of them with
the package itself; the CLI's option parsing and the Slicer module need only the light ones. Usage in a
package's ``__init__.py``::

    __all__, __getattr__ = lazy_exports(__name__, {"submodule": ("name_a", "name_b")})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` for ``package``: each name of ``exports`` (submodule → names) is
    imported from ``package.<submodule>`` when first asked for."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)

    return sorted(module_of), __getattr__
