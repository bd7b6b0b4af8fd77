"""A job as one part of a multirun, and the multirun's outcome.

Hydra's parallel launchers (joblib on one host, submitit on Slurm or locally) run each job in another process, so
what a job returns never reaches the process that launched the sweep. Each job therefore writes its exit status
into its run.json (:func:`record_job_end`), and the end-of-multirun callback reads them all back
(:func:`sweep_exit_code`): the command exits with the worst status of its jobs, and a job that died before writing
one counts as failed.

Under such a launcher a job also runs with ``isolation=process`` unless the command line says ``isolation=none``:
a native crash then costs one cell, instead of taking down the joblib worker — and with it every other job of the
sweep — or the Slurm task and with it the gathered report.
"""
from __future__ import annotations

from pathlib import Path

IN_PROCESS_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
outcome: dict[str, int | None] = {"exit_code": None}  # set by the callback in the launching process


def hydra_job():
    """Hydra's config of the running job, or None outside a Hydra app (Python API)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except Exception:  # noqa: BLE001 - not under Hydra
        return None


def in_multirun() -> bool:
    from hydra.types import RunMode

    hc = hydra_job()
    return hc is not None and hc.mode == RunMode.MULTIRUN


def parallel_launcher() -> bool:
    """True when the jobs of this multirun run outside the launching process (any launcher but Hydra's basic)."""
    hc = hydra_job()
    return in_multirun() and hc.launcher.get("_target_", IN_PROCESS_LAUNCHER) != IN_PROCESS_LAUNCHER


def isolation_for(cfg) -> str:
    """The isolation a job really uses: ``process`` under a parallel launcher unless isolation=none was asked."""
    if cfg.isolation != "none" or not parallel_launcher():
        return cfg.isolation
    asked = any(o.replace(" ", "") == "isolation=none" for o in hydra_job().overrides.task)
    return "none" if asked else "process"


def record_job_end(out_dir: Path, code: int, error: str | None = None, **extra) -> None:
    """Add the job's exit status (the one-line error that ended it, if any, and ``extra`` keys) to its run.json."""
    from harness.runrecord import update_run

    update_run(out_dir, exit_code=code, error=error or None, **extra)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a multirun: its subfolders holding a run.json (report/ and hidden ones aside)."""
    return sorted(p.parent for p in Path(sweep_dir).glob("*/run.json") if not p.parent.name.startswith("."))


def sweep_exit_code(sweep_dir: Path) -> int:
    """The worst exit status of the multirun's jobs; a job without one in run.json (it died) counts as 1."""
    from harness.runrecord import read_run

    codes = []
    for d in job_dirs(sweep_dir):
        try:
            codes.append(int(read_run(d).exit_code))
        except (ValueError, TypeError):  # None: the job died before writing its status
            codes.append(1)
    return max(codes, default=0)
