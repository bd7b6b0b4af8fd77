"""A job as one part of a multirun, and the multirun's outcome.

Hydra's parallel launchers (joblib on one host, submitit on Slurm or locally) run each job in another process, so
what a job returns never reaches the process that launched the sweep. Each job therefore writes its exit status
into its run.json (:func:`record_job_end`), and the end-of-multirun callback reads them all back
(:func:`sweep_exit_code`): the command exits with the worst status of its jobs, and a job that died before writing
one counts as failed.

A job of a local parallel launcher (joblib's loky workers, submitit's local executor) runs in a process the
launching command started, or one its helper started; when that command is killed (kill -9, SIGTERM) nothing told
the job, which went on measuring and writing for minutes. The command names itself in the environment its jobs
inherit (:func:`mark_launcher`: host, PID and the PID's start time, so a reused PID is not mistaken for it) and
:func:`die_with_launcher` ends a job on that host once the command is gone (its ``isolation=process`` child dies
with it, harness/run/isolation.py). Polling is used rather than Linux's ``PR_SET_PDEATHSIG``, which watches only the
direct parent (submitit's local controller outlives the command) and fires when the *thread* that started the
process ends (loky starts workers from threads). A Slurm job runs on another host and is left to Slurm.

Every job of a multirun runs with ``isolation=process`` unless the command line says ``isolation=none``: what
one backend leaves behind (memory it never frees) is not charged to the next one, and under a parallel launcher
a native crash costs one cell, instead of taking down the joblib worker — and with it every other job of the
sweep — or the Slurm task and with it the gathered report.

What Hydra knows of the running job (multirun or not, its number, its command-line overrides, the launcher) is read
once at the entry (harness/cli.py) into a :class:`Launch`; the modules below read that, never Hydra.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

IN_PROCESS_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
outcome: dict[str, int | None] = {"exit_code": None}  # set by the callback in the launching process


@dataclass(frozen=True)
class Launch:
    """How the running job was launched; the default (no Hydra app: the Python API) is a single run."""

    under_hydra: bool = False  # a job of the ``enginebench`` command (Hydra's .hydra/ files are then written)
    multirun: bool = False
    job_num: int = 0  # Hydra's job number in a multirun
    task_overrides: tuple[str, ...] = ()  # the job's own command-line overrides
    launcher: str = IN_PROCESS_LAUNCHER  # the launcher's ``_target_``


_launch = {"current": Launch()}


def enter_job(launch: Launch) -> None:
    """Said by the entry before the job runs (and ``Launch()`` after it)."""
    _launch["current"] = launch


def current() -> Launch:
    return _launch["current"]


def in_multirun() -> bool:
    return current().multirun


def parallel_launcher() -> bool:
    """True when the jobs of this multirun run outside the launching process (any launcher but Hydra's basic)."""
    return in_multirun() and current().launcher != IN_PROCESS_LAUNCHER


def isolation_for(cfg) -> str:
    """The isolation a job really uses: ``process`` in any multirun unless isolation=none was asked. Under Hydra's
    basic launcher the jobs run one after another in the command's process: without a process of its own, a
    backend that leaks (memory, threads, a CUDA context) would be charged to every backend measured after it."""
    if cfg.isolation != "none" or not in_multirun():
        return cfg.isolation
    asked = any(o.replace(" ", "") == "isolation=none" for o in current().task_overrides)
    return "none" if asked else "process"


LAUNCHER_ENV = "ENGINEBENCH_LAUNCHER"  # host:pid:start time of the command that launched the jobs
PARENT_POLL_S = 0.5  # how soon a job notices that the command that launched it is gone
_watching: dict[str, str] = {}


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), or "" where there is no /proc; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if not Path("/proc/self/stat").exists():  # no /proc here: existence is all we can check
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return ""
        return None
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in parentheses may hold spaces


def mark_launcher() -> None:
    """Called by the command before Hydra starts: its jobs (whatever process runs them) inherit who launched them."""
    import socket

    os.environ[LAUNCHER_ENV] = f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def die_with_launcher() -> None:
    """Under a parallel launcher on the command's host, end this job's process (exit 1) once the command that
    launched it is gone. Started once per process; a no-op for in-process jobs (their process *is* the command)."""
    import socket

    mark = os.environ.get(LAUNCHER_ENV, "")
    host, _, rest = mark.partition(":")
    pid_text, _, started = rest.partition(":")
    if not parallel_launcher() or "launcher" in _watching or host != socket.gethostname() or not pid_text.isdigit():
        return
    pid = int(pid_text)
    if pid == os.getpid():
        return
    _watching["launcher"] = mark

    def watch() -> None:
        while _start_time(pid) == started:
            time.sleep(PARENT_POLL_S)
        _end_children()
        os._exit(1)  # the launching command is gone

    threading.Thread(target=watch, daemon=True, name="launcher-watchdog").start()


def _end_children() -> None:
    """SIGKILL every process this one started (isolation workers, multiprocessing's resource tracker): they were
    seen to outlive a worker that exits from a thread, their parent-death signal notwithstanding."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            continue


def record_job_end(out_dir: Path, code: int, error: str | None = None, **extra) -> None:
    """Add the job's exit status (the one-line error that ended it, if any, and ``extra`` keys) to its run.json."""
    from harness.record.runrecord import update_run

    update_run(out_dir, exit_code=code, error=error or None, **extra)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a multirun: its subfolders holding a run.json (report/ and hidden ones aside)."""
    return sorted(p.parent for p in Path(sweep_dir).glob("*/run.json") if not p.parent.name.startswith("."))


def sweep_exit_code(sweep_dir: Path) -> int:
    """The worst exit status of the multirun's jobs; a job without one in run.json (it died) counts as 1."""
    from harness.record.runrecord import read_run

    codes = []
    for d in job_dirs(sweep_dir):
        try:
            codes.append(int(read_run(d).exit_code))
        except (ValueError, TypeError):  # None: the job died before writing its status
            codes.append(1)
    return max(codes, default=0)
