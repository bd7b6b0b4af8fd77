"""The plugin contract, enforced: what a backend class must look like when it registers (:func:`check_backend`),
and what its hooks must return (:func:`check_logits`), each refusal one line naming the plugin, the hook and the fix.

At registration: the class can be built without arguments; every method marked ``@hookimpl`` names a hook of
:mod:`harness.plugin.hookspecs` (else: did you mean ...?) and takes only that hook's arguments; the required hooks are
implemented and marked (a method with a hook's name but no ``@hookimpl``, or a near miss like ``decode_steps``,
is named). Hook results are checked during validation and warm-up only: never inside a timed region, where the
checks' host syncs would distort the numbers.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any

from harness import PROJECT
from harness.errors import UserError
from harness.plugin import hookspecs

REQUIRED_HOOKS = ("load", "prefill", "decode_step", "reset_kv")
DOCS = "see docs/plugins.md"


def hook_arguments() -> dict[str, tuple[str, ...]]:
    """Every hook of the spec -> its argument names."""
    return {name: tuple(inspect.signature(fn).parameters)
            for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, f"{PROJECT}_spec")}


def _marked(obj: Any) -> dict[str, Any]:
    """The methods of ``obj`` marked with ``@hookimpl``."""
    found = {}
    for attr in dir(obj):
        try:
            member = getattr(obj, attr)
        except Exception:  # noqa: BLE001 - a property that needs a loaded model
            continue
        if callable(member) and hasattr(member, f"{PROJECT}_impl"):
            found[attr] = member
    return found


def check_backend(name: str, backend_class: type, package: str) -> Any:
    """Build the backend's instance and check its hooks; returns the instance. ``package``: who provides it."""
    who = f"backend '{name}' ({package})"
    try:
        instance = backend_class()
    except Exception as exc:  # noqa: BLE001 - any failure of a plugin's constructor is the plugin's
        raise UserError(f"{who}: {backend_class.__name__}() failed: {type(exc).__name__}: {exc}",
                        "a backend class is built without arguments; do heavy work in load(spec)") from exc
    specs = hook_arguments()
    marked = _marked(instance)
    for method, fn in marked.items():
        if method not in specs:
            close = difflib.get_close_matches(method, list(specs), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(f"{who}: @hookimpl {method} is not a hook",
                            f"{hint}the hooks are {', '.join(specs)}; {DOCS}")
        wanted = specs[method]
        given = tuple(p for p in inspect.signature(fn).parameters)
        extra = [a for a in given if a not in wanted]
        if extra:
            raise UserError(f"{who}: hook {method} takes {', '.join(extra)}, which the spec does not pass",
                            f"name its arguments as the spec does: {method}(self, {', '.join(wanted)})")
    public = [m for m in dir(instance) if not m.startswith("_") and callable(getattr(type(instance), m, None))]
    for hook in REQUIRED_HOOKS:
        if hook in marked:
            continue
        if hook in public:
            raise UserError(f"{who}: {hook} is not marked as a hook",
                            f"put @hookimpl (from harness.sdk import hookimpl) above def {hook}")
        close = difflib.get_close_matches(hook, [m for m in public if m not in specs], n=1)
        hint = f"rename {close[0]} to {hook}" if close else f"implement {hook}({', '.join(specs[hook])})"
        raise UserError(f"{who}: required hook {hook} is missing", f"{hint} with @hookimpl; {DOCS}")
    return instance


def check_logits(hook: str, backend: str, logits: Any, batch: int, vocab: int, device: str,
                 finite: bool = True) -> None:
    """A prefill / decode_step result: a finite float torch tensor [B, V] on the run's device."""
    import torch

    where = f"backend '{backend}': {hook}"
    expected = f"a float torch tensor [B, V] = [{batch}, {vocab}] on {device}"
    if not isinstance(logits, torch.Tensor):
        raise UserError(f"{where} returned {type(logits).__name__}, not a torch tensor",
                        f"return {expected}")
    if tuple(logits.shape) != (batch, vocab):
        raise UserError(f"{where} returned logits of shape {list(logits.shape)}, expected [B, V] = [{batch}, {vocab}]",
                        "return the last position's logits, one row per sequence (e.g. logits[:, -1])")
    if not logits.is_floating_point():
        raise UserError(f"{where} returned {str(logits.dtype).removeprefix('torch.')} logits", f"return {expected}")
    if torch.device(device) != logits.device and not (logits.device.type == torch.device(device).type == "cuda"
                                                       and torch.device(device).index is None):
        raise UserError(f"{where} returned logits on {logits.device}, expected {device}",
                        "return them on the device the harness passed in spec.device")
    if finite and not bool(torch.isfinite(logits).all()):
        raise UserError(f"{where} returned non-finite logits (NaN or inf)",
                        "check the backend's numerics (dtype overflow, uninitialised cache)")
