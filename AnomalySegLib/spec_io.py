"""JSON dicts ↔ the engine's frozen dataclasses (model, preprocessing, scoring and training specs).

Every spec stored in a configuration file or a model bundle is read by :func:`spec_from_dict` and
written by :func:`spec_to_dict`, so all of them follow one policy:

- a missing key takes the field's default;
- an unknown key is refused with a :class:`SpecError` naming it with its path (``"denoiser.unet.chanels"``)
  and the spec it was found in, except in a section documented as free-form (``free_form=True``:
  unknown keys are left to other readers, e.g. the thresholds in a bundle's ``"scoring"`` section);
- nested dataclass fields (also ``X | None``) are built recursively, JSON lists become tuples where the
  field is a tuple;
- the dataclass's own ``__post_init__`` checks the values.

Written by hand rather than with a schema library: the specs are plain frozen dataclasses already, and
this is all the conversion they need.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")
S = TypeVar("S", bound="JsonSpec")


class SpecError(ValueError):
    """A spec (configuration section, bundle entry) has an invalid or unknown field; the message names it."""


class JsonSpec:
    """Mixin for a spec dataclass: ``from_dict`` and ``to_dict`` by :func:`spec_from_dict` and
    :func:`spec_to_dict`.

    Class attributes: ``SPEC_NAME``, how messages name the spec; ``FREE_FORM``, true for a section that
    other readers extend (unknown keys are ignored instead of refused).
    """

    SPEC_NAME: ClassVar[str] = "spec"
    FREE_FORM: ClassVar[bool] = False

    @classmethod
    def from_dict(cls: type[S], values: Mapping[str, Any]) -> S:
        """The spec from its JSON object; missing keys take the defaults.

        Raises:
            SpecError: an unknown key (the message names it) or an invalid value.
        """
        return spec_from_dict(cls, values, cls.SPEC_NAME, free_form=cls.FREE_FORM)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this spec (tuples as lists); :meth:`from_dict` reverses it."""
        return spec_to_dict(self)


def check_keys(values: Mapping[str, Any], known: Any, what: str) -> None:
    """Refuse keys of ``values`` outside ``known``; ``what`` names one key (``"Stage I configuration key"``).

    Raises:
        SpecError: an unknown key.
    """
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SpecError(f"unknown {what}(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def spec_from_dict(cls: type[T], values: Any, what: str, *, free_form: bool = False, _path: str = "") -> T:
    """Build the dataclass ``cls`` from the JSON object ``values``.

    Args:
        what: the spec, as a reader knows it (``"Stage I model"``, ``"preprocessing spec"``); every
            message names it and the path of the field inside it.
        free_form: ignore unknown keys instead of refusing them (only for documented free-form sections).

    Raises:
        SpecError: ``values`` is not an object, has an unknown key, a field has the wrong JSON type, or
            ``cls`` refuses a value.
    """
    if not isinstance(values, Mapping):
        raise SpecError(f"{what} {_path.rstrip('.') or 'root'} must be a JSON object, not {type(values).__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    if not free_form:
        check_keys({_path + name: value for name, value in values.items()},
                   [_path + name for name in fields], f"{what} field")
    hints = typing.get_type_hints(cls)
    converted = {name: _convert(hints[name], value, what, f"{_path}{name}")
                 for name, value in values.items() if name in fields}
    try:
        return cls(**converted)
    except TypeError as error:
        raise SpecError(f"{what} {_path.rstrip('.') or 'root'}: {error}") from error


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """The JSON form of a spec dataclass: nested dataclasses as objects, tuples as lists."""
    return _jsonable(dataclasses.asdict(spec))


def _convert(hint: Any, value: Any, what: str, path: str) -> Any:
    """``value`` (from JSON) as the field type ``hint`` expects it."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        return _convert(options[0], value, what, path) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return spec_from_dict(hint, value, what, _path=f"{path}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{what} field {path} must be a list, not {type(value).__name__}")
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            items = (items[0],) * len(value)
        if items and len(items) != len(value):
            raise SpecError(f"{what} field {path} must have {len(items)} values, not {len(value)}")
        return tuple(_convert(item, element, what, f"{path}[{index}]")
                     for index, (item, element) in enumerate(zip(items or (Any,) * len(value), value)))
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value
