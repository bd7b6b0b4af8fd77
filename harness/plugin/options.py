"""Typed backend options: each backend declares a dataclass of its ``backend.*`` options (types and defaults),
with the allowed values of an option (:func:`choice`) and what an option needs of the others (:func:`needs`) next
to it, and anything else in a ``check(self)`` method. The harness puts it into Hydra's ConfigStore (so Hydra
refuses a wrong type or an unknown key) and checks every job of a command line with :func:`check_options` before
the first one starts.

    @dataclass
    class MyOptions:
        provider: str = choice("auto", "cuda", "cpu")       # allowed values; the first is the default
        threads: int = 4                                    # any int
        fused: bool = needs(False, provider="cuda")         # when true, backend.provider must be cuda
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
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
