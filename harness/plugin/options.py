"""Typed backend options: each backend declares a dataclass of its ``backend.*`` options (types and defaults),
with the allowed values of an option (:func:`choice`) and what an option needs of the others (:func:`needs`) next
to it, and anything else in a ``check(self)`` method. The harness puts it into Hydra's ConfigStore (so Hydra
refuses a wrong type or an unknown key; :func:`unplain_field` refuses at discovery what a config cannot hold),
checks every job of a command line with :func:`check_options` before the first one starts, and hands ``load`` an
instance of it (:func:`readable_options`: typed, and a read-only mapping for plugins that read one).

    @dataclass
    class MyOptions:
        provider: str = choice("auto", "cuda", "cpu")       # allowed values; the first is the default
        threads: int = 4                                    # any int
        fused: bool = needs(False, provider="cuda")         # when true, backend.provider must be cuda
"""
from __future__ import annotations

import copy
import dataclasses
import enum
import typing
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Optional

from harness.errors import UserError


def choice(*values: Any) -> Any:
    """A field whose value must be one of ``values``; the first is the default."""
    return field(default=values[0], metadata={"choices": tuple(values)})


def needs(default: Any, **conditions: Any) -> Any:
    """A field that, when set to a true value, needs the other options to have these values."""
    return field(default=default, metadata={"needs": conditions})


@dataclass
class _Named:
    name: str = ""  # the backend's registered name: first key of the ``backend`` node


def config_node(backend: str, options: type) -> type:
    """The ``backend/<name>`` node for the ConfigStore: the options dataclass with ``name`` first."""
    return make_dataclass(f"{options.__name__}Node", [("name", str, field(default=backend))], bases=(options, _Named))


def from_defaults(backend: str, defaults: dict[str, Any]) -> type:
    """A dataclass for a backend that declares its options as a dict of defaults (types taken from the values)."""
    def typed(value: Any):
        if value is None:
            return Optional[Any], None
        if isinstance(value, (list, tuple)):
            return list[Any], field(default_factory=lambda v=list(value): list(v))
        if isinstance(value, dict):
            return dict[str, Any], field(default_factory=lambda v=dict(value): dict(v))
        return type(value), value

    specs = []
    for key, value in defaults.items():
        kind, default = typed(value)
        specs.append((key, kind, default if isinstance(default, dataclasses.Field) else field(default=default)))
    return make_dataclass(f"{backend.replace('-', '_')}_options", specs)


def defaults_of(options: type) -> dict[str, Any]:
    """The default value of every option."""
    out = {}
    for f in fields(options):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def allowed_values(options: type, name: str) -> tuple | None:
    for f in fields(options):
        if f.name == name:
            return f.metadata.get("choices")
    return None


def check_options(backend: str, options: type, values: dict[str, Any]) -> None:
    """Refuse a value outside an option's choices, an unmet ``needs`` and whatever ``options.check`` refuses,
    in one line naming the option, the allowed values and the backend."""
    for f in fields(options):
        value = values.get(f.name)
        allowed = f.metadata.get("choices")
        if allowed is not None and value not in allowed:
            raise UserError(f"backend.{f.name}={value} is not an option of backend {backend}",
                            f"use one of: {', '.join(map(str, allowed))}")
        required = f.metadata.get("needs", {})
        unmet = {k: v for k, v in required.items() if values.get(k) != v}
        if value and unmet:
            wanted = " ".join(f"backend.{k}={_show(v)}" for k, v in required.items())
            raise UserError(f"backend.{f.name}={_show(value)} needs {wanted} (backend {backend})",
                            f"add {' '.join(f'backend.{k}={_show(v)}' for k, v in unmet.items())} "
                            f"or drop backend.{f.name}={_show(value)}")
    check = getattr(options, "check", None)
    if check is not None:
        known = {f.name for f in fields(options)}
        try:
            check(options(**{k: v for k, v in values.items() if k in known}))
        except UserError as err:
            raise UserError(f"{err.problem} (backend {backend})", err.fix) from err


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


_PLAIN_TYPES = (int, float, str, bool, bytes, Path)


def unplain_field(options: type) -> str | None:
    """The first field of ``options`` that a config cannot hold (only plain values: numbers, strings, booleans,
    paths, enums, lists and dicts of them, nested dataclasses of them), in words; None when every field can."""
    try:
        hints = typing.get_type_hints(options)
    except Exception as exc:  # noqa: BLE001 - an annotation naming what does not exist
        return f"its annotations do not resolve ({type(exc).__name__}: {exc})"
    for f in fields(options):
        kind = hints.get(f.name, Any)
        if not _plain_type(kind):
            return f"field '{f.name}' is of type {getattr(kind, '__name__', kind)}"
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        if not _plain_value(default):
            return f"field '{f.name}' defaults to a {type(default).__name__}"
    return None


def _plain_type(kind: Any) -> bool:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any or kind in _PLAIN_TYPES or kind is type(None):
        return True
    if isinstance(kind, type) and (issubclass(kind, enum.Enum) or dataclasses.is_dataclass(kind)):
        return not dataclasses.is_dataclass(kind) or unplain_field(kind) is None
    if origin is typing.Union:
        return all(_plain_type(a) for a in args)
    if origin in (list, tuple):
        return all(_plain_type(a) for a in args if a is not Ellipsis)
    if origin is dict:
        key_ok = not args or args[0] in (str, int, Any) or isinstance(args[0], type) and issubclass(args[0], enum.Enum)
        return key_ok and (not args or _plain_type(args[1]))
    return kind in (list, tuple, dict)


def _plain_value(value: Any) -> bool:
    if value is None or isinstance(value, (*_PLAIN_TYPES, enum.Enum)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int, enum.Enum)) and _plain_value(v) for k, v in value.items())
    return dataclasses.is_dataclass(value) and not isinstance(value, type) and all(
        _plain_value(getattr(value, f.name)) for f in fields(value))


class OptionsMapping(Mapping):
    """Read-only mapping access to a backend's options (``spec.options["threads"]``, ``.get``, ``**``), for
    plugins written when ``LoadSpec.options`` was a dict; attribute access (``spec.options.threads``) works too."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"backend options are read-only (cannot assign '{name}')")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"backend options are read-only (cannot delete '{name}')")


_with_mapping: dict[type, type] = {}


def readable_options(values: Any) -> Any:
    """The backend's options as ``load`` receives them (``LoadSpec.options``): an instance of the backend's own
    options dataclass (``isinstance`` holds, fields by attribute) that is also a read-only mapping. ``values`` is
    such an instance or, from code that builds a LoadSpec by hand, a mapping of values (then a plain dataclass of
    those names is made for it)."""
    if isinstance(values, OptionsMapping):
        return values
    if not (dataclasses.is_dataclass(values) and not isinstance(values, type)):
        values = dict(values or {})
        values = make_dataclass("Options", [(k, Any) for k in values])(**values)
    cls = type(values)
    if cls not in _with_mapping:
        # a plain subclass: the backend's dataclass fields, __eq__ and __repr__, with the mapping methods added
        _with_mapping[cls] = type(cls.__name__, (cls, OptionsMapping), {"__module__": cls.__module__})
    out = object.__new__(_with_mapping[cls])
    for f in fields(values):
        object.__setattr__(out, f.name, copy.deepcopy(getattr(values, f.name)))  # the job's spec stays as it was
    return out
