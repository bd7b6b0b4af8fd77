"""The ``enginebench`` command (``python -m harness``): a Hydra app.

Before Hydra starts, every job of the command line (each combination of a multirun sweep) is composed and checked,
so that a typo costs one line and exit code 2 before any job runs, not a traceback after an hour of sweeping.
``--verbose`` (or ENGINEBENCH_VERBOSE=1) shows the traceback of such errors.
"""
from __future__ import annotations

import difflib
import itertools
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.config import check_config, register_configs
from harness.errors import EXIT_USER_ERROR, UserError
from harness.plugins import PluginRegistry

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
_state: dict = {"registry": None, "exit_code": 0}


def _registry() -> PluginRegistry:
    if _state["registry"] is None:
        registry = PluginRegistry.discover()
        register_configs({name: registry.defaults(name) for name in registry.names()})
        _state["registry"] = registry
    return _state["registry"]


def _job_output_dir(cfg) -> Path:
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_entry(cfg: DictConfig) -> None:
    from harness import multirun
    from harness.pinning import pinned

    out = _job_output_dir(cfg)
    pin = None
    try:
        check_config(cfg, multirun=multirun.in_multirun())
        cfg.isolation = multirun.isolation_for(cfg)  # what really runs is what run.json records
        with pinned(cfg) as pin:
            code = _run_one_job(cfg, out)
    except UserError as err:
        if not multirun.in_multirun():
            _fail(err)
        # one job of a sweep: say why it stopped, record it, and let the other jobs run
        _print_user_error(err)
        code = EXIT_USER_ERROR
        if out.is_dir():
            multirun.record_job_end(out, code, err.one_line(), pin=pin)
    except KeyboardInterrupt:
        print(f"\nenginebench: interrupted; every finished cell is in {out}/results.csv "
              f"(continue with: resume=true output_dir={out})", file=sys.stderr, flush=True)
        sys.exit(130)
    else:
        if (out / "run.json").exists():
            multirun.record_job_end(out, code, pin=pin)
    _state["exit_code"] = max(_state["exit_code"], code)


def _run_one_job(cfg, out: Path) -> int:
    from harness.sweep import run_job

    if cfg.isolation == "process":
        from harness.isolation import run_job_isolated

        return run_job_isolated(cfg, out)
    return run_job(cfg, out, _registry())


def _fail(err: UserError) -> None:
    _print_user_error(err)
    sys.exit(EXIT_USER_ERROR)


def _print_user_error(err: UserError) -> None:
    if _verbose():
        import traceback

        traceback.print_exc()
    print(err.one_line(), file=sys.stderr, flush=True)


def _verbose() -> bool:
    return os.environ.get("ENGINEBENCH_VERBOSE", "") not in ("", "0")


def _sweep_combinations(overrides: list[str], limit: int = 256) -> list[list[str]]:
    """Expand ``key=a,b`` sweeps into the job override lists Hydra will run (at most ``limit`` are checked)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(c) for c in itertools.islice(itertools.product(*choices), limit)]


def _explain_hydra_error(exc: Exception, registry: PluginRegistry, known_keys: list[str] | None = None) -> UserError:
    """Turn Hydra / OmegaConf composition errors into one line with a fix."""
    import re

    text = str(exc)
    cause = str(exc.__cause__ or "")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    missing = re.search(r"Could not find '(\w+)/([^']+)'", text)
    if missing:
        group, value = missing.groups()
        options = registry.names() if group == "backend" else _group_options(group)
        close = difflib.get_close_matches(value, options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return UserError(f"unknown {group} '{value}'", f"{hint}choose one of: {', '.join(options)}")
    key = re.search(r"Could not override '([^']+)'", text)
    if key and re.search(r"not in|No match", cause):
        name = key.group(1)
        close = difflib.get_close_matches(name, known_keys or [], n=1)
        hint = f"did you mean {close[0]}? " if close else "check the spelling; "
        return UserError(f"unknown config key '{name}'",
                         f"{hint}`enginebench --cfg job` lists every key (use +key=value to add a new one)")
    conv = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", text + " " + cause)
    if conv:
        full_key = re.search(r"full_key: (\S+)", text + "\n" + cause)
        where = full_key.group(1) if full_key else "that key"
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(conv.group(2),
                                                                                          conv.group(2))
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


def precheck(argv: list[str]) -> None:
    """Compose and check every job of this command line; raise UserError on the first bad one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    registry = _registry()
    overrides = [a for a in argv if not a.startswith("-") and not a.startswith("hydra")]
    multirun = "-m" in argv or "--multirun" in argv
    sweep_dir_given = any(a.startswith("hydra.sweep.dir=") for a in argv)
    try:
        combos = _sweep_combinations(overrides)
    except Exception as exc:  # noqa: BLE001 - parse errors become one line
        raise _explain_hydra_error(exc, registry) from exc
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for combo in combos:
            try:
                cfg = compose(config_name="config", overrides=combo)
            except Exception as exc:  # noqa: BLE001
                raise _explain_hydra_error(exc, registry, _known_keys(compose, combo)) from exc
            check_config(cfg, multirun=multirun)
            check_output_dir(cfg)
            if multirun and cfg.resume and not cfg.get("output_dir") and not sweep_dir_given:
                raise UserError("resume=true in a multirun needs the sweep directory to resume",
                                "add hydra.sweep.dir=PATH (the multirun folder holding the job folders)")
    GlobalHydra.instance().clear()


def check_output_dir(cfg) -> None:
    """Create the output directory now and write a probe file: a bad path fails before any work, in one line."""
    import tempfile

    target = Path(cfg.output_dir) if cfg.get("output_dir") else Path("outputs")
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"output directory '{target}' is not writable ({exc.strerror})",
                        "run from a writable directory or set output_dir=PATH to one") from exc


def version_text() -> str:
    """``enginebench --version``: this package's version, then the libraries that decide the numbers."""
    import importlib.metadata as metadata
    import platform

    from harness.environment import library_versions

    try:
        own = metadata.version("enginebench")
    except metadata.PackageNotFoundError:
        own = "unknown (not installed)"
    libs = library_versions()
    key = ["torch", "transformers", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-rtx-cu13-bindings",
           "hydra-core", "numpy", "scipy", "pandas"]
    return "\n".join([f"enginebench {own}", f"python {platform.python_version()}",
                      *(f"{name} {libs[name]}" for name in key if name in libs)])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--version" in argv or "-V" in argv:
        print(version_text())
        sys.exit(0)
    if "--verbose" in argv:
        argv.remove("--verbose")
        os.environ["ENGINEBENCH_VERBOSE"] = "1"
    info_flags = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion", "-sc"}
    try:
        _registry()
        if not info_flags.intersection(argv):
            precheck(argv)
    except UserError as err:
        _fail(err)
    sys.argv = [sys.argv[0], *argv]
    hydra_entry()
    from harness.multirun import outcome

    sys.exit(max(_state["exit_code"], outcome["exit_code"] or 0))


if __name__ == "__main__":
    main()
