"""Plugin discovery and the handle through which the harness calls the selected backend.

Backends come from the ``enginebench.backends`` entry-point group: each entry point names a class; the harness
instantiates it and registers the instance under the entry point's name. Observer plugins (hookwrappers, tracers)
come from the ``enginebench.plugins`` group or are registered by the caller. ``ENGINEBENCH_DISABLE_PLUGIN_AUTOLOAD=1``
turns autoloading of third-party entry points off (the built-in backends, which ship in this distribution, stay).
"""
from __future__ import annotations

import importlib.metadata as metadata
import os
from pathlib import Path
from typing import Any

import pluggy

from harness import PROJECT, hookspecs
from harness.errors import UserError

BACKEND_GROUP = "enginebench.backends"
OBSERVER_GROUP = "enginebench.plugins"
DISABLE_ENV = "ENGINEBENCH_DISABLE_PLUGIN_AUTOLOAD"
_OWN_DISTRIBUTION = "enginebench"


def _source_tree_entry_points(group: str) -> list[metadata.EntryPoint]:
    """The built-in entry points read from pyproject.toml, when running from a source tree that is not installed
    (e.g. ``PYTHONPATH=. python -m harness`` on a machine where pip cannot install)."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return []
    import tomllib

    table = tomllib.loads(pyproject.read_text()).get("project", {}).get("entry-points", {}).get(group, {})
    return [metadata.EntryPoint(name=name, value=value, group=group) for name, value in table.items()]


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    autoload = os.environ.get(DISABLE_ENV, "") in ("", "0")
    found = []
    installed = any(getattr(getattr(ep, "dist", None), "metadata", {}).get("Name") == _OWN_DISTRIBUTION
                    for ep in metadata.entry_points(group=BACKEND_GROUP))
    if not installed:
        found.extend(_source_tree_entry_points(group))
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        own = dist is not None and dist.metadata["Name"] == _OWN_DISTRIBUTION
        if own or autoload:
            found.append(ep)
    return found


class PluginRegistry:
    """A pluggy manager holding every backend (by name) and every observer plugin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.backend_classes: dict[str, type] = {}
        self.load_errors: dict[str, str] = {}
        self.open_backends: dict[str, Any] = {}  # plugin name -> backend instance currently registered
        self.version = 0  # bumped whenever a backend opens or closes

    @classmethod
    def discover(cls) -> "PluginRegistry":
        registry = cls()
        for ep in _entry_points(BACKEND_GROUP):
            if ep.name in registry.backend_classes:
                continue  # the same distribution seen twice on sys.path (editable installs)
            try:
                registry.add_backend(ep.name, ep.load())
            except Exception as exc:  # a broken third-party plugin must not take the others down
                registry.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
        for ep in _entry_points(OBSERVER_GROUP):
            if registry.pm.get_plugin(ep.name) is None:
                registry.pm.register(ep.load(), name=ep.name)
        return registry

    def add_backend(self, name: str, backend_class: type) -> None:
        self.backend_classes[name] = backend_class

    def add_observer(self, plugin: Any, name: str | None = None) -> None:
        self.pm.register(plugin, name=name)

    def names(self) -> list[str]:
        return sorted(self.backend_classes)

    def defaults(self, name: str) -> dict[str, Any]:
        """The backend's option defaults, asked through its ``enginebench_backend_defaults`` hook."""
        probe = pluggy.PluginManager(PROJECT)
        probe.add_hookspecs(hookspecs)
        probe.register(self.backend_classes[name](), name=name)
        results = probe.hook.enginebench_backend_defaults()
        return dict(results[0]) if results else {}

    def check_quant(self, name: str, quant, options: dict[str, Any], device: str) -> None:
        """Refuse (UserError) a weight-only scheme the backend cannot run, through its ``check_quant`` hook; a
        backend without the hook runs quant=none only."""
        if not quant.enabled or name not in self.backend_classes:
            return
        probe = pluggy.PluginManager(PROJECT)
        probe.add_hookspecs(hookspecs)
        probe.register(self.backend_classes[name](), name=name)
        if not probe.hook.check_quant.get_hookimpls():
            raise UserError(f"backend {name} does not support weight quantization (quant={quant.scheme})",
                            "use quant=none with this backend")
        probe.hook.check_quant(quant=quant, options=options, device=device)

    def open(self, name: str) -> "BackendHandle":
        if name not in self.backend_classes:
            hint = f"; it failed to load: {self.load_errors[name]}" if name in self.load_errors else ""
            raise UserError(f"unknown backend '{name}'{hint}",
                            f"choose one of: {', '.join(self.names())}")
        instance = self.backend_classes[name]()
        plugin_name, n = name, 1
        while self.pm.get_plugin(plugin_name) is not None:  # a second handle on the same backend (tests, compare)
            n += 1
            plugin_name = f"{name}#{n}"
        self.pm.register(instance, name=plugin_name)
        self.open_backends[plugin_name] = instance
        self.version += 1
        return BackendHandle(self, name, instance)


_shared: dict[str, "PluginRegistry"] = {}


def registry() -> "PluginRegistry":
    """The process's registry: discovered once, its backends' option nodes put into Hydra's ConfigStore (so that
    ``backend=<name>`` composes). The CLI, the Python API and isolation workers all use this one."""
    if "registry" not in _shared:
        from harness.config import register_configs

        found = PluginRegistry.discover()
        register_configs({name: found.defaults(name) for name in found.names()})
        _shared["registry"] = found
    return _shared["registry"]


class _SelectedHook:
    """One hook of one backend: a pluggy subset caller that leaves out every other open backend.

    Rebuilt only when the set of open backends changes, so a call costs one version check over pluggy's own."""

    def __init__(self, registry: PluginRegistry, hook_name: str, instance: Any):
        self.registry, self.hook_name, self.instance = registry, hook_name, instance
        self._version, self._caller = -1, None

    def __call__(self, **kwargs):
        if self._version != self.registry.version:
            others = [p for p in self.registry.open_backends.values() if p is not self.instance]
            self._caller = self.registry.pm.subset_hook_caller(self.hook_name, others)
            self._version = self.registry.version
        return self._caller(**kwargs)


class BackendHandle:
    """Calls one backend's hooks (observers still wrap them); other backends are left out of every call."""

    def __init__(self, registry: PluginRegistry, name: str, instance: Any):
        self.registry = registry
        self.name = name
        self.instance = instance
        self.load = _SelectedHook(registry, "load", instance)
        self.prefill = _SelectedHook(registry, "prefill", instance)
        self.decode_step = _SelectedHook(registry, "decode_step", instance)
        self.reset_kv = _SelectedHook(registry, "reset_kv", instance)
        self._close = _SelectedHook(registry, "close", instance)

    def direct_decode_step(self):
        """The backend's own decode_step function, bypassing pluggy: used to measure the harness's overhead."""
        return self.instance.decode_step

    def close(self) -> None:
        try:
            self._close()
        finally:
            self.registry.pm.unregister(self.instance)
            self.registry.open_backends = {k: v for k, v in self.registry.open_backends.items()
                                           if v is not self.instance}
            self.registry.version += 1


def configuration_label(backend: str, options: dict, defaults: dict | None) -> str:
    """The backend's name plus the options that differ from its defaults: ``hf-...[compile=reduce-overhead]``.

    Without the defaults (a backend not installed where the report is made, and a run.json that predates
    recording them) every option is named: a longer label, but two configurations never share one."""
    options = {k: v for k, v in options.items() if k != "name"}
    if defaults is None:
        changed = [f"{k}={v}" for k, v in sorted(options.items())]
    else:
        changed = [f"{k}={v}" for k, v in options.items() if k not in defaults or defaults[k] != v]
    return f"{backend}[{','.join(changed)}]" if changed else backend
