"""Composing configs from command-line overrides, for the CLI and the Python API alike: the edge where Hydra and
OmegaConf end.

The schema (harness/config.py) is frozen dataclasses; Hydra merges into what it composes, so the ConfigStore holds
unfrozen twins of them (:func:`hydra_node`) and one ``backend/<name>`` node per backend (its options dataclass,
harness/options.py). :func:`to_job_spec` turns a composed config into the frozen :class:`JobSpec`
(``OmegaConf.to_object``, the backend's node an instance of its own options dataclass): nothing past here sees
Hydra. The resolvers conf/config.yaml uses (``eb_first``, ``eb_job_dir``) are registered here too.

Every job of a command line (each combination of a multirun sweep) is composed and checked before any job runs,
so a typo costs one line and exit code 2, not a traceback after an hour of sweeping. Hydra's and OmegaConf's
composition errors are turned into a :class:`UserError` naming the bad part and the fix (with did-you-mean).
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
import typing
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from harness.config import jobname
from harness.config.jobcheck import check_job, check_output_dir, probe_writable
from harness.config.schema import BackendChoice, JobSpec
from harness.errors import UserError
from harness.plugin.options import allowed_values, config_node
from harness.plugin.plugins import PluginRegistry, registry

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
_registered: dict[str, int] = {}  # id of the registry whose backends are in the ConfigStore


def configured_registry() -> PluginRegistry:
    """The process's plugin registry, its backends' option dataclasses put into Hydra's ConfigStore (so that
    ``backend=<name>`` composes): what every composition of a config starts from."""
    plugins = registry()
    register_configs(plugins)
    return plugins


def hydra_node(schema: type) -> type:
    """The schema dataclass as Hydra's ConfigStore holds it: not frozen (Hydra merges into it), its sections the
    same, the backend an open node (each ``backend/<name>`` node fills it). Named and importable like the schema's
    own classes (``harness.compose.<Name>``), so a composed config pickles (submitit's jobs)."""
    name = f"{schema.__name__}Node"
    if name in globals():
        return globals()[name]
    hints = typing.get_type_hints(schema)
    specs = []
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if kind is BackendChoice:
            kind = Any
        elif dataclasses.is_dataclass(kind):
            kind = hydra_node(kind)
        if f.default is not dataclasses.MISSING:
            default = dataclasses.field(default=f.default)
        elif f.default_factory is dataclasses.MISSING:
            default = dataclasses.field(default=MISSING)  # required: Hydra says so when it stays unset
        elif dataclasses.is_dataclass(f.default_factory):
            default = dataclasses.field(default_factory=hydra_node(f.default_factory))
        else:
            default = dataclasses.field(default_factory=f.default_factory)
        specs.append((f.name, kind, default))
    node = dataclasses.make_dataclass(name, specs)
    node.__module__ = __name__
    globals()[name] = node
    return node


hydra_node(JobSpec)  # at import: a composed config that reaches another process (a launcher's job) unpickles


def register_resolvers() -> None:
    """The resolvers conf/config.yaml names. Also at import of the command line: a launcher's job process
    (submitit) unpickles it before Hydra names the job's directory."""
    if not OmegaConf.has_resolver("eb_first"):  # ${eb_first:a,b}: a unless it is null/empty, else b
        OmegaConf.register_new_resolver("eb_first", lambda first, default: first if first else default)
    if not OmegaConf.has_resolver("eb_job_dir"):
        OmegaConf.register_new_resolver("eb_job_dir", _job_dir)


def _job_dir(backend, task_overrides, num) -> str:
    """``${eb_job_dir:${backend},${hydra.overrides.task},${hydra.job.num}}``: the job's folder (harness/jobname.py)."""
    try:
        options = OmegaConf.to_container(backend, resolve=True)
        overrides = list(OmegaConf.to_container(task_overrides)) if task_overrides is not None else []
        return jobname.dir_name(jobname.job_label(options, overrides))
    except Exception:  # noqa: BLE001 - never fail a job over its name: Hydra's numbered directory instead
        return f"{num}_{getattr(backend, 'name', 'job')}"


def register_configs(plugins: PluginRegistry) -> None:
    """Put the schema and one ``backend/<name>`` node per discovered backend (its options dataclass, typed) into
    Hydra's ConfigStore, once per registry. A node OmegaConf still refuses makes its backend unavailable (the
    commands that select it say why), as a bad declaration does at discovery."""
    from hydra.core.config_store import ConfigStore

    register_resolvers()
    if _registered.get("registry") == id(plugins):
        return
    cs = ConfigStore.instance()
    cs.store(name="enginebench_schema", node=hydra_node(JobSpec))
    for name, options in list(plugins.option_classes.items()):
        try:
            node = config_node(name, options)
            OmegaConf.structured(node)
        except Exception as exc:  # noqa: BLE001 - the plugin's declaration
            plugins.load_errors[name] = (f"backend '{name}': its options cannot be a config: {type(exc).__name__} "
                                         "(fix: declare fields of int, float, str, bool, lists or dicts of those)")
            for table in (plugins.option_classes, plugins.backend_classes, plugins.providers):
                table.pop(name, None)
            continue
        cs.store(group="backend", name=name, node=node)
    _registered["registry"] = id(plugins)


def to_job_spec(cfg, plugins: PluginRegistry) -> JobSpec:
    """The composed config as the frozen :class:`JobSpec` (resolved); its backend's options an instance of the
    backend's own options dataclass. Raises UserError for a backend that is not available."""
    name = cfg.backend.name
    if name not in plugins.option_classes:
        raise plugins.unavailable(name)
    options_class = plugins.option_classes[name]
    backend = OmegaConf.to_container(cfg.backend, resolve=True)
    choice = BackendChoice(name, options_class(**{f.name: backend[f.name] for f in dataclasses.fields(options_class)
                                                   if f.name in backend}))
    return _frozen(JobSpec, OmegaConf.to_object(cfg), backend=choice)


def _frozen(schema: type, node: Any, **given: Any):
    """A schema dataclass instance from ``node`` (its unfrozen twin, as ``OmegaConf.to_object`` made it)."""
    hints = typing.get_type_hints(schema)
    values = dict(given)
    for f in dataclasses.fields(schema):
        if f.name in values:
            continue
        value = getattr(node, f.name)
        values[f.name] = _frozen(hints[f.name], value) if dataclasses.is_dataclass(hints[f.name]) else value
    return schema(**values)


def compose_config(overrides: list[str]) -> JobSpec:
    """One job's config from overrides (no sweeps), checked; raises UserError on a bad key or value. The backend's
    ``check_quant`` is left to the run (harness/pipeline.py), on the device the job resolves."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    plugins = configured_registry()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            try:
                cfg = compose(config_name="config", overrides=list(overrides))
            except Exception as exc:  # noqa: BLE001 - composition errors become one line
                raise explain_hydra_error(exc, plugins, _known_keys(compose, list(overrides)),
                                          _backend_of(list(overrides))) from exc
    finally:
        GlobalHydra.instance().clear()
    spec = to_job_spec(cfg, plugins)
    check_job(spec, plugins, backend_quant=False)
    return spec


def _backend_of(combo: list[str]) -> str:
    """The backend a job's overrides select (the config's default when none does)."""
    for o in combo:
        key, _, value = o.partition("=")
        if key.lstrip("+~") == "backend":
            return value
    found = re.search(r"^\s*- backend: (\S+)", (Path(CONF_DIR) / "config.yaml").read_text(), re.M)
    return found.group(1) if found else "?"


def sweep_combinations(overrides: list[str], limit: int | None = None) -> list[list[str]]:
    """Expand ``key=a,b`` sweeps into the job override lists Hydra will run (every one, unless ``limit``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(c) for c in itertools.islice(itertools.product(*choices), limit)]


def swept_keys(overrides: list[str]) -> list[str] | None:
    """The keys a command line sweeps (``a=1,2``, ``range()``, ``choice()``); None when it does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - precheck has already explained a bad override
        return None
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def closest_name(value: str, options: list[str]) -> str | None:
    """The option a misspelled or shortened name means: the only one it starts (``onnx`` -> ``onnxruntime``,
    ``hf`` -> ``hf-flashattn-staticcache``), else the closest spelling."""
    starting = [o for o in options if o.lower().startswith(value.lower())]
    if len(starting) == 1:
        return starting[0]
    close = difflib.get_close_matches(value, options, n=1)
    return close[0] if close else None


def explain_hydra_error(exc: Exception, plugins: PluginRegistry, known_keys: list[str] | None = None,
                        backend: str | None = None) -> UserError:
    """Turn Hydra / OmegaConf composition errors into one line with a fix (naming the backend for backend.*)."""
    text = str(exc)
    cause = str(exc.__cause__ or "")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    missing = re.search(r"Could not find '(\w+)/([^']+)'", text)
    if missing:
        group, value = missing.groups()
        if group == "backend" and value in plugins.load_errors:
            return plugins.unavailable(value)
        options = plugins.names() if group == "backend" else _group_options(group)
        close = closest_name(value, options)
        hint = f"did you mean {group}={close}? " if close else ""
        return UserError(f"unknown {group} '{value}'", f"{hint}choose one of: {', '.join(options)}")
    key = re.search(r"Could not override '([^']+)'", text)
    if key and re.search(r"not in|No match", cause):
        name = key.group(1)
        close = difflib.get_close_matches(name, known_keys or [], n=1)
        hint = f"did you mean {close[0]}? " if close else "check the spelling; "
        if name.startswith("backend.") and backend in plugins.option_classes:
            options = list(plugins.defaults(backend))
            close = difflib.get_close_matches(name.removeprefix("backend."), options, n=1, cutoff=0.75)
            hint = f"did you mean backend.{close[0]}? " if close else ""
            return UserError(f"backend {backend} has no option '{name}'",
                             f"{hint}its options: {', '.join(f'backend.{o}' for o in options) or 'none'}")
        return UserError(f"unknown config key '{name}'",
                         f"{hint}`enginebench --cfg job` lists every key (use +key=value to add a new one)")
    conv = (re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", text + " " + cause)
            or re.search(r"Value '([^']*)' is not a valid (bool)", text + " " + cause))
    if conv:
        full_key = re.search(r"full_key: (\S+)", text + "\n" + cause)
        where = full_key.group(1) if full_key else "that key"
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
                "bool": "true or false"}.get(conv.group(2),
                                                                                          conv.group(2))
        if where.startswith("backend.") and backend in plugins.option_classes:
            allowed = allowed_values(plugins.option_classes[backend], where[len("backend."):])
            fix = f"use one of: {', '.join(map(str, allowed))}" if allowed else f"give {where} {kind}"
            return UserError(f"wrong type for {where} of backend {backend}: '{conv.group(1)}' is not {kind}", fix)
        return UserError(f"wrong type for {where}: '{conv.group(1)}' is not {kind}", f"give {where} {kind}")
    return UserError(f"invalid command line: {first}", "see `enginebench --help` and `enginebench --cfg job`")


def _known_keys(compose, combo: list[str]) -> list[str]:
    """Every key of the config that this command line selects (for did-you-mean hints)."""
    groups = [o for o in combo if o.split("=", 1)[0] in ("backend", "model")]
    for overrides in (groups, []):
        try:
            return _flat_keys(compose(config_name="config", overrides=overrides))
        except Exception:  # noqa: BLE001 - the group itself may be the bad part
            continue
    return []


def _flat_keys(cfg, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, DictConfig) and k != "hf_config":
            keys.extend(_flat_keys(v, full + "."))
    return keys


def _group_options(group: str) -> list[str]:
    folder = Path(CONF_DIR) / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def precheck(argv: list[str], compose_only: bool = False) -> int:
    """Compose and check every job of this command line; raise UserError on the first bad one. Returns the
    number of jobs.
    ``compose_only`` (``--cfg``, ``--info``): only that the command line composes, nothing is written."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    plugins = configured_registry()
    overrides = [a for a in argv if not a.startswith("-") and not a.startswith("hydra")]
    multirun = "-m" in argv or "--multirun" in argv
    sweep_dir_given = any(a.startswith("hydra.sweep.dir=") for a in argv)
    try:
        combos = sweep_combinations(overrides)
    except Exception as exc:  # noqa: BLE001 - parse errors become one line
        raise explain_hydra_error(exc, plugins) from exc
    if not multirun and not compose_only:
        check_single_values(overrides)
    if not compose_only:
        for arg in argv:  # Hydra would create these itself, with a traceback when it cannot
            key, _, value = arg.partition("=")
            if key in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
                probe_writable(Path(value), key)
    labels: list[str] = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for combo in combos:
            try:
                cfg = compose(config_name="config", overrides=combo)
            except Exception as exc:  # noqa: BLE001
                raise explain_hydra_error(exc, plugins, _known_keys(compose, combo), _backend_of(combo)) from exc
            if compose_only:
                continue
            spec = to_job_spec(cfg, plugins)
            check_job(spec, plugins, multirun=multirun)
            check_output_dir(spec)
            if multirun and spec.resume and not spec.output_dir and not sweep_dir_given:
                raise UserError("resume=true in a multirun needs the sweep directory to resume",
                                "add hydra.sweep.dir=PATH (the multirun folder holding the job folders)")
            if multirun and spec.report.baseline is not None:
                labels.append(_configuration(spec, plugins))
    GlobalHydra.instance().clear()
    if multirun and not compose_only:
        check_report_baseline(spec.report.baseline, labels)
    return len(combos)


def _configuration(spec: JobSpec, plugins: PluginRegistry) -> str:
    """The label the report will give this job's configuration (harness/record/labels.py)."""
    from harness.model.limits import quant_scheme_of
    from harness.record.labels import configuration_label, with_quant

    label = configuration_label(spec.backend.name, spec.backend.as_dict(), plugins.defaults(spec.backend.name))
    return with_quant(label, quant_scheme_of(spec).label)


def check_report_baseline(baseline: str | None, labels: list[str]) -> None:
    """``report.baseline`` of a multirun names a configuration the sweep will run: otherwise its report, written
    after the last job, would be refused when every job has already run."""
    if baseline is None:
        return
    from harness.record.labels import resolve_baseline

    try:
        resolve_baseline(sorted(set(labels)), baseline)
    except UserError as err:
        problem = err.problem.replace("in these results", "in this sweep")
        raise UserError(f"report.{problem}", err.fix.replace("--baseline", "report.baseline")) from err


def check_single_values(overrides: list[str]) -> None:
    """A sweep (``key=a,b``) without ``-m``: Hydra's own message is six lines; ours says what to add."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            raise UserError(f"'{o.input_line}' gives several values, which only a multirun can run",
                            "add -m to run one job per value, or give a single value")
