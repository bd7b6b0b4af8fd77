"""Composing configs from command-line overrides, for the CLI and the Python API alike.

Every job of a command line (each combination of a multirun sweep) is composed and checked before any job runs,
so a typo costs one line and exit code 2, not a traceback after an hour of sweeping. Hydra's and OmegaConf's
composition errors are turned into a :class:`UserError` naming the bad part and the fix (with did-you-mean).
"""
from __future__ import annotations

import difflib
import itertools
import re
from pathlib import Path

from harness.config.schema import check_config, register_configs
from harness.errors import UserError
from harness.plugin.options import allowed_values, check_options
from harness.plugin.plugins import PluginRegistry, registry

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def configured_registry() -> PluginRegistry:
    """The process's plugin registry, its backends' option dataclasses put into Hydra's ConfigStore (so that
    ``backend=<name>`` composes): what every composition of a config starts from."""
    plugins = registry()
    register_configs(plugins.option_classes)
    return plugins


def compose_config(overrides: list[str]):
    """One job's config from overrides (no sweeps), checked; raises UserError on a bad key or value."""
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
    check_config(cfg)
    check_backend_options(cfg, plugins)
    return cfg


def check_backend_options(cfg, plugins: PluginRegistry) -> None:
    """The job's ``backend.*`` values against the backend's options dataclass (allowed values, needs, check)."""
    from omegaconf import OmegaConf

    name = cfg.backend.name
    if name not in plugins.option_classes:
        raise plugins.unavailable(name)
    values = OmegaConf.to_container(cfg.backend, resolve=True)
    values.pop("name", None)
    check_options(name, plugins.option_classes[name], values)


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
            check_config(cfg, multirun=multirun)
            check_backend_quant(plugins, cfg)
            check_backend_options(cfg, plugins)
            check_output_dir(cfg)
            if multirun and cfg.resume and not cfg.get("output_dir") and not sweep_dir_given:
                raise UserError("resume=true in a multirun needs the sweep directory to resume",
                                "add hydra.sweep.dir=PATH (the multirun folder holding the job folders)")
            if multirun and cfg.report.baseline is not None:
                labels.append(_configuration(cfg, plugins))
    GlobalHydra.instance().clear()
    if multirun and not compose_only:
        check_report_baseline(cfg.report.baseline, labels)
    return len(combos)


def _configuration(cfg, plugins: PluginRegistry) -> str:
    """The label the report will give this job's configuration (harness.plugin.plugins.configuration_label)."""
    from omegaconf import OmegaConf

    from harness.config.schema import quant_scheme_of
    from harness.plugin.plugins import configuration_label
    from harness.report.aggregate import with_quant

    label = configuration_label(cfg.backend.name, OmegaConf.to_container(cfg.backend, resolve=True),
                                plugins.defaults(cfg.backend.name))
    return with_quant(label, quant_scheme_of(cfg).label)


def check_report_baseline(baseline: str | None, labels: list[str]) -> None:
    """``report.baseline`` of a multirun names a configuration the sweep will run: otherwise its report, written
    after the last job, would be refused when every job has already run."""
    if baseline is None:
        return
    from harness.report.comparison import resolve_baseline

    try:
        resolve_baseline(sorted(set(labels)), baseline)
    except UserError as err:
        problem = err.problem.replace("in these results", "in this sweep")
        raise UserError(f"report.{problem}", err.fix.replace("--baseline", "report.baseline")) from err


def check_backend_quant(plugins, cfg) -> None:
    """The backend refuses a weight-only scheme it cannot run, in one line, before any job starts."""
    from omegaconf import OmegaConf

    from harness.config.schema import quant_scheme_of

    quant = quant_scheme_of(cfg)
    if not quant.enabled:
        return
    import torch

    device = cfg.device
    if device in ("auto", "pin"):
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    options = OmegaConf.to_container(cfg.backend, resolve=True)
    options.pop("name", None)
    plugins.check_quant(cfg.backend.name, quant, options, "cuda:0" if device == "cuda" else device)


def check_single_values(overrides: list[str]) -> None:
    """A sweep (``key=a,b``) without ``-m``: Hydra's own message is six lines; ours says what to add."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            raise UserError(f"'{o.input_line}' gives several values, which only a multirun can run",
                            "add -m to run one job per value, or give a single value")


def check_output_dir(cfg) -> None:
    """Create the output directory now and write a probe file: a bad path fails before any work, in one line."""
    target = Path(cfg.output_dir) if cfg.get("output_dir") else Path("outputs")
    probe_writable(target, "output_dir" if cfg.get("output_dir") else "the default output directory")


def probe_writable(target: Path, key: str) -> None:
    import tempfile

    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"output directory '{target}' ({key}) is not writable ({exc.strerror})",
                        "run from a writable directory or set output_dir=PATH to one") from exc
