"""Plugin discovery, the plugin contract at registration, and the handle through which the harness calls the
selected backend.

Backends come from the ``enginebench.backends`` entry-point group: each entry point names a class; the harness
checks it (:mod:`harness.plugin.contract`), instantiates it and registers the instance under the entry point's name.
Observer plugins (hookwrappers, tracers) come from the ``enginebench.plugins`` group or are registered by the caller.
``ENGINEBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` turns autoloading of third-party entry points off (the built-in backends,
which ship in this distribution, stay).

A backend that fails to import, to build or to meet the contract is reported (one line on stderr) and skipped: only
a command that selects it fails, with the original error. Two packages claiming one backend name is an error for
commands that select that name, naming both packages, unless ``ENGINEBENCH_BACKEND_FROM=name=package[,...]`` says
which one to use (a built-in backend is never silently replaced).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata as metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from harness import PROJECT
from harness.errors import UserError
from harness.plugin import hookspecs
from harness.plugin import sources as plugin_sources
from harness.plugin.contract import check_backend, check_logits, hook_arguments
from harness.plugin.options import defaults_of, from_defaults, unplain_field

BACKEND_GROUP = "enginebench.backends"
OBSERVER_GROUP = "enginebench.plugins"
DISABLE_ENV = "ENGINEBENCH_DISABLE_PLUGIN_AUTOLOAD"
CHOOSE_ENV = "ENGINEBENCH_BACKEND_FROM"  # name=package,...: which package provides a name claimed twice
_OWN_DISTRIBUTION = plugin_sources.OWN_DISTRIBUTION


@dataclass(frozen=True)
class Provider:
    """The distribution (package) that provides a backend, recorded with every result row."""

    package: str
    version: str

    def __str__(self) -> str:
        return f"{self.package} {self.version}"


def _own_version() -> str:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    import tomllib

    try:
        return tomllib.loads(pyproject.read_text())["project"]["version"] + " (source tree)"
    except (OSError, KeyError, ValueError):
        return "unknown"


def _provider(ep: metadata.EntryPoint) -> Provider:
    dist = getattr(ep, "dist", None)
    if dist is None:  # read from pyproject.toml: this source tree
        return Provider(_OWN_DISTRIBUTION, _own_version())
    return Provider(dist.metadata["Name"], dist.version)


def _entry_points(group: str, report) -> list[metadata.EntryPoint]:
    """This installation's entry points, then (unless autoload is off) those of the installed third-party
    distributions (:mod:`harness.plugin.sources` says which count)."""
    found = plugin_sources.builtin_entry_points(group)
    third_party, ignored = plugin_sources.third_party_entry_points(group)
    for line in ignored:
        report(f"enginebench: warning: ignored {line}: a built-in backend is never replaced")
    if os.environ.get(DISABLE_ENV, "") in ("", "0"):
        found.extend(third_party)
    return found


def _chosen_packages() -> dict[str, str]:
    pairs = [p.split("=", 1) for p in os.environ.get(CHOOSE_ENV, "").split(",") if "=" in p]
    return {name.strip(): package.strip() for name, package in pairs}


def _options_class(name: str, provider: Provider, declared: Any) -> type:
    """The backend's options dataclass, checked to be what a config can hold (a plain dataclass of plain values,
    harness.plugin.options.unplain_field); raises UserError so that a bad declaration costs only the commands that
    select this backend."""
    fix = ("return a @dataclass class from enginebench_backend_options (fields of int, float, str, bool, lists or "
           "dicts of those), or a dict of such defaults from enginebench_backend_defaults")
    if declared is not None and not (isinstance(declared, dict) or dataclasses.is_dataclass(declared)
                                     and isinstance(declared, type)):
        raise UserError(f"backend '{name}' ({provider}): its options are a {type(declared).__name__}, not a "
                        "dataclass or a dict of defaults", fix)
    try:
        options = declared if isinstance(declared, type) else from_defaults(name, declared or {})
        problem = unplain_field(options)  # the ConfigStore holds plain values only
    except Exception as exc:  # noqa: BLE001 - any failure here is the plugin's declaration
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if problem:
        raise UserError(f"backend '{name}' ({provider}): its options cannot be a config: {problem}", fix)
    return options


def _hook_defaults(instance: Any) -> dict[str, Any] | type | None:
    """What the backend declares of its options: a dataclass (typed) or a dict of defaults, or None."""
    probe = pluggy.PluginManager(PROJECT)
    probe.add_hookspecs(hookspecs)
    probe.register(instance, name="probe")
    typed = probe.hook.enginebench_backend_options()
    if typed:
        return typed[0]
    defaults = probe.hook.enginebench_backend_defaults()
    return dict(defaults[0]) if defaults else None


def _load_entry_point(ep: metadata.EntryPoint, name: str, provider: Provider) -> type:
    try:
        return ep.load()
    except BaseException as exc:  # noqa: BLE001 - a broken plugin (SystemExit at import included) is skipped
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UserError(f"backend '{name}' failed to import ({provider}): {type(exc).__name__}: {exc}",
                        "fix or reinstall the package that provides it") from exc


class PluginRegistry:
    """A pluggy manager holding every backend (by name) and every observer plugin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.backend_classes: dict[str, type] = {}
        self.providers: dict[str, Provider] = {}
        self.option_classes: dict[str, type] = {}
        self.load_errors: dict[str, str] = {}  # backend name -> why it is not available (shown when selected)
        self.open_backends: dict[str, Any] = {}  # plugin name -> backend instance currently registered
        self.version = 0  # bumped whenever a backend opens or closes

    @classmethod
    def discover(cls, report=None) -> "PluginRegistry":
        """Every backend of the entry-point group, checked; ``report(line)`` hears of each one skipped."""
        registry = cls()
        report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        claims: dict[str, list[tuple[metadata.EntryPoint, Provider]]] = {}
        for ep in _entry_points(BACKEND_GROUP, report):
            provider = _provider(ep)
            same = [p for e, p in claims.get(ep.name, []) if p.package == provider.package]
            if not same:  # the same distribution seen twice on sys.path (editable installs) counts once
                claims.setdefault(ep.name, []).append((ep, provider))
        chosen = _chosen_packages()
        for name, candidates in claims.items():
            if len(candidates) > 1:
                picked = [c for c in candidates if c[1].package == chosen.get(name)]
                if not picked:
                    both = " and ".join(str(p) for _, p in candidates)
                    registry.load_errors[name] = (
                        f"two packages provide backend '{name}': {both} (fix: uninstall one, or choose with "
                        f"{CHOOSE_ENV}={name}=<package>)")
                    report(f"enginebench: warning: backend '{name}' is provided by {both}; "
                           f"it is unavailable until {CHOOSE_ENV}={name}=<package> says which to use")
                    continue
                candidates = picked
            ep, provider = candidates[0]
            before = plugin_sources.torch_state()
            try:
                registry.add_backend(name, _load_entry_point(ep, name, provider), provider)
            except UserError as err:
                registry.load_errors[name] = f"{err.problem} (fix: {err.fix})"
                report(f"enginebench: warning: skipped: {err.problem}")
            changed = plugin_sources.restore_torch_state(before)
            if changed:  # it would change how every other backend is measured
                report(f"enginebench: warning: backend '{name}' ({provider}) changed torch's global state when "
                       f"imported ({', '.join(changed)}); restored")
        for ep in _entry_points(OBSERVER_GROUP, report):
            if registry.pm.get_plugin(ep.name) is None:
                before = plugin_sources.torch_state()
                try:
                    registry.add_observer(ep.load(), name=ep.name)
                except Exception as exc:  # noqa: BLE001 - a broken observer is skipped like a broken backend
                    report(f"enginebench: warning: observer plugin '{ep.name}' ({_provider(ep)}) skipped: "
                           f"{type(exc).__name__}: {exc}")
                changed = plugin_sources.restore_torch_state(before)
                if changed:
                    report(f"enginebench: warning: observer plugin '{ep.name}' changed torch's global state when "
                           f"imported ({', '.join(changed)}); restored")
        return registry

    def add_backend(self, name: str, backend_class: type, provider: Provider | None = None) -> None:
        """Check the class against the contract and its options declaration; raises UserError."""
        provider = provider or Provider(getattr(backend_class, "__module__", "?").split(".")[0], "unregistered")
        instance = check_backend(name, backend_class, str(provider))
        try:
            declared = _hook_defaults(instance)
        except Exception as exc:  # noqa: BLE001 - a plugin's own failure, reported as such
            raise UserError(f"backend '{name}' ({provider}): declaring its options failed: "
                            f"{type(exc).__name__}: {exc}", "fix enginebench_backend_options in the plugin") from exc
        options = _options_class(name, provider, declared)
        self.backend_classes[name] = backend_class
        self.providers[name] = provider
        self.option_classes[name] = options

    def add_observer(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin that wraps hooks (``hookwrapper=True``); pluggy checks its argument names, and
        ``check_pending`` its hook names (a misspelled hook would otherwise never be called)."""
        registered = self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=registered)
            known = ", ".join(hook_arguments())
            raise UserError(f"observer plugin '{registered}': {exc}", f"the hooks are {known}") from exc

    def names(self) -> list[str]:
        return sorted(self.backend_classes)

    def defaults(self, name: str) -> dict[str, Any]:
        """The backend's option defaults (the ``backend=<name>`` config node, minus ``name``)."""
        return defaults_of(self.option_classes[name])

    def unavailable(self, name: str) -> UserError:
        """The error for selecting a backend that is not registered (failed to load, or unknown)."""
        if name in self.load_errors:
            return UserError(f"backend '{name}' is unavailable: {self.load_errors[name]}",
                             "fix or reinstall the package that provides it, or choose another backend")
        import difflib

        starting = [n for n in self.names() if n.startswith(name)]  # a shortened name: backend=hf, backend=trt-h
        close = starting if len(starting) == 1 else difflib.get_close_matches(name, self.names(), n=1)
        hint = f"did you mean backend={close[0]}? " if close else ""
        return UserError(f"unknown backend '{name}'", f"{hint}choose one of: {', '.join(self.names())}")

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
            raise self.unavailable(name)
        instance = self.backend_classes[name]()
        plugin_name, n = name, 1
        while self.pm.get_plugin(plugin_name) is not None:  # a second handle on the same backend (tests, compare)
            n += 1
            plugin_name = f"{name}#{n}"
        self.pm.register(instance, name=plugin_name)
        self.open_backends[plugin_name] = instance
        self.version += 1
        return BackendHandle(self, name, instance)


_shared: dict[str, PluginRegistry] = {}


def registry() -> PluginRegistry:
    """The process's registry, discovered once. The CLI, the Python API and isolation workers all use this one;
    what composes a config puts its backends' options into Hydra's ConfigStore first
    (:func:`harness.config.compose.configured_registry`): discovery knows nothing of Hydra."""
    if "registry" not in _shared:
        _shared["registry"] = PluginRegistry.discover()
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
        self.provider = registry.providers.get(name)
        self.load = _SelectedHook(registry, "load", instance)
        self.prefill = _SelectedHook(registry, "prefill", instance)
        self.decode_step = _SelectedHook(registry, "decode_step", instance)
        self.reset_kv = _SelectedHook(registry, "reset_kv", instance)
        self._close = _SelectedHook(registry, "close", instance)
        self.kernel_category = _SelectedHook(registry, "kernel_category", instance)  # optional (harness/profile)
        self.profile_kernels = _SelectedHook(registry, "profile_kernels", instance)

    def direct_decode_step(self):
        """The backend's own decode_step function, bypassing pluggy: used to measure the harness's overhead."""
        return self.instance.decode_step

    def checked(self, vocab: int, device: str, finite: bool = True) -> "CheckedHooks":
        """The same hooks with their results checked (validation and warm-up only: the checks sync the host)."""
        return CheckedHooks(self, vocab, device, finite)

    def close(self) -> None:
        try:
            self._close()
        finally:
            self.registry.pm.unregister(self.instance)
            self.registry.open_backends = {k: v for k, v in self.registry.open_backends.items()
                                           if v is not self.instance}
            self.registry.version += 1


class CheckedHooks:
    """prefill / decode_step / reset_kv of a handle, each logits result checked against the contract
    (harness.plugin.contract.check_logits); ``finite=False`` leaves NaN/inf to validation, which reports them."""

    def __init__(self, handle: BackendHandle, vocab: int, device: str, finite: bool):
        self.handle, self.vocab, self.device, self.finite = handle, vocab, device, finite
        self.name = handle.name

    def prefill(self, input_ids, prompt_lens):
        logits = self.handle.prefill(input_ids=input_ids, prompt_lens=prompt_lens)
        check_logits("prefill", self.name, logits, input_ids.shape[0], self.vocab, self.device, self.finite)
        return logits

    def decode_step(self, tokens):
        logits = self.handle.decode_step(tokens=tokens)
        check_logits("decode_step", self.name, logits, tokens.shape[0], self.vocab, self.device, self.finite)
        return logits

    def reset_kv(self):
        return self.handle.reset_kv()
