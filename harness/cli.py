"""The ``enginebench`` command (``python -m harness``): a Hydra app.

Before Hydra starts, every job of the command line (each combination of a multirun sweep) is composed and checked
(:func:`harness.config.compose.precheck`), so that a typo costs one line and exit code 2 before any job runs.
Each job, single or one of a multirun, is then turned into a frozen :class:`~harness.config.schema.JobSpec` and
what Hydra knows of it into a :class:`~harness.run.multirun.Launch`, and goes to :func:`harness.run.job.run_job`:
below this module and harness/config/compose.py nothing sees Hydra or OmegaConf.
``--verbose`` (or ENGINEBENCH_VERBOSE=1) shows the traceback of such errors and the libraries' warnings, which
are otherwise counted and hidden (:mod:`harness.run.console`).
"""
from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.config import jobname
from harness.config.compose import CONF_DIR, configured_registry, precheck, register_resolvers, swept_keys, to_job_spec
from harness.config.jobcheck import check_job
from harness.errors import EXIT_FAILED, EXIT_USER_ERROR, UserError, no_space_line, out_of_space
from harness.plugin.plugins import registry
from harness.record.labels import configuration_label
from harness.run import console, multirun
from harness.run.job import run_job
from harness.version import version_text

_exit_code = {"worst": 0}  # the worst status over the jobs this process ran (a multirun runs several)


def _configuration_label(backend: dict) -> str:
    return configuration_label(backend["name"], backend, registry().defaults(backend["name"]))


# at import: a launcher's job process (submitit) unpickles this module before Hydra names the job's directory
jobname.register_job_dir(_configuration_label)
register_resolvers()


def _launch() -> multirun.Launch:
    """What Hydra knows of the running job, read here once."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    return multirun.Launch(under_hydra=True, multirun=sweep, job_num=int(hc.job.num) if sweep else 0,  # unset otherwise
                           task_overrides=tuple(hc.overrides.task),
                           launcher=str(hc.launcher.get("_target_", multirun.IN_PROCESS_LAUNCHER)))


def _job_output_dir(cfg: DictConfig) -> Path:
    """output_dir=PATH for a single run; in a multirun PATH is the sweep directory (conf/config.yaml) and each job
    writes its own subdirectory: jobs never share a results file."""
    if cfg.get("output_dir") and not multirun.in_multirun():
        return Path(cfg.output_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_entry(cfg: DictConfig) -> None:
    multirun.enter_job(_launch())
    try:
        _run_hydra_job(cfg)
    finally:
        multirun.enter_job(multirun.Launch())


def _run_hydra_job(cfg: DictConfig) -> None:
    multirun.die_with_launcher()  # a worker of joblib / submitit-local ends with the command (multirun.py)
    out = _job_output_dir(cfg)
    if multirun.in_multirun():
        _say_job(cfg)
    try:
        plugins = configured_registry()
        spec = to_job_spec(cfg, plugins)
        check_job(spec, plugins, multirun=multirun.in_multirun())
        code = run_job(spec, out)
    except UserError as err:
        if not multirun.in_multirun():
            _fail(err)
        # one job of a sweep: say why it stopped (run_job recorded it) and let the other jobs run
        _print_user_error(err)
        code = EXIT_USER_ERROR
    except OSError as exc:
        if not out_of_space(exc):
            raise
        _say_hidden(console.take_hidden_line())  # the out-of-space line stays the last one
        print(no_space_line(exc, out), file=sys.stderr, flush=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"\nenginebench: interrupted; every finished cell is in {out}/results.csv "
              f"(continue with: resume=true output_dir={out})", file=sys.stderr, flush=True)
        sys.exit(130)
    _exit_code["worst"] = max(_exit_code["worst"], code)


def _say_job(cfg) -> None:
    """'job 2 of 4: onnxruntime[attention=gqa]' before each job of a multirun."""
    from omegaconf import OmegaConf

    launch = multirun.current()
    total = jobname.job_count()
    label = jobname.job_label(OmegaConf.to_container(cfg.backend, resolve=True), list(launch.task_overrides))
    print(f"\njob {launch.job_num + 1}{f' of {total}' if total else ''}: {label}", file=sys.stderr, flush=True)


def _fail(err: UserError) -> None:
    _print_user_error(err)
    sys.exit(EXIT_USER_ERROR)


def _print_user_error(err: UserError) -> None:
    if _verbose():
        import traceback

        traceback.print_exc()
    print(err.one_line(), file=sys.stderr, flush=True)


def _verbose() -> bool:
    return console.verbose()


def _say_hidden(line: str | None = None) -> None:
    line = line or console.hidden_line()
    if line:
        print(line, file=sys.stderr, flush=True)


def _without_flag_values(argv: list[str]) -> list[str]:
    """The overrides of a ``--cfg job ...`` / ``--info defaults ...`` command line (their values are not overrides)."""
    out, skip = [], False
    for arg in argv:
        if skip and "=" not in arg:
            skip = False
            continue
        skip = arg in ("--cfg", "-c", "--info", "--package", "-p")
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--version" in argv or "-V" in argv:
        print(version_text())
        sys.exit(0)
    if "--verbose" in argv:
        argv.remove("--verbose")
        os.environ["ENGINEBENCH_VERBOSE"] = "1"
    console.quiet()  # library warnings counted, not printed (harness/run/console.py)
    atexit.register(_say_hidden)
    info_flags = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion", "-sc"}
    from harness.run.repeats import expand_multirun

    argv = expand_multirun(argv)  # measure.repeats in a multirun: rounds of every configuration (run/repeats.py)
    try:
        configured_registry()  # the backends' option nodes, for Hydra's own composition too
        if not info_flags.intersection(argv):
            jobs = precheck(argv)
            jobname.remember_sweep(swept_keys([a for a in argv if not a.startswith("-")]), jobs)
        elif {"--cfg", "-c", "--info"}.intersection(argv):
            precheck(_without_flag_values(argv), compose_only=True)  # one line here too, not Hydra's traceback
    except UserError as err:
        _fail(err)
    sys.argv = [sys.argv[0], *argv]
    multirun.mark_launcher()  # jobs in other processes end when this command does
    hydra_entry()
    sys.exit(max(_exit_code["worst"], multirun.outcome["exit_code"] or 0))


if __name__ == "__main__":
    main()
