"""The stages of one job, written once: start -> load -> validate -> overhead -> cells -> finish.

Where the backend runs is the executor's business: :class:`InProcess` calls it in this process; the process
executor (:class:`harness.run.isolation.InWorker`) runs the same backend stages
(:func:`harness.run.stages.open_backend`) in a child process and one cell per request. The pipeline itself decides
what a task runs, records every outcome into run.json, and applies the checks both paths need (the backend's
``check_quant``), so a check cannot be skipped by choosing ``isolation=process``.

A plugin is code the user installed, but it does not own the exit status: a hook that calls ``sys.exit`` (or
raises SystemExit) fails the phase or cell it ran in (:func:`contained`), and the job still ends with its outcome
line and status 1 (harness/run/job.py).
"""
from __future__ import annotations

import contextlib
from typing import Any, Protocol

from harness import progress
from harness.errors import UserError
from harness.plugin.plugins import registry
from harness.record.results import ResultsWriter
from harness.record.runrecord import write_run
from harness.run.plan import Job
from harness.run.stages import open_backend, record_load_failure, start_job
from harness.run.sweep import failed_rows, one_line, run_cell, sweep_cells


class PluginExit(RuntimeError):
    """A backend hook raised SystemExit: recorded like any other failure of the phase or cell it ran in."""

    def __init__(self, code: Any):
        super().__init__(f"the backend called sys.exit({code!r}) inside a hook")


@contextlib.contextmanager
def contained():
    """Turn a SystemExit raised by backend code into :class:`PluginExit`, an ordinary exception."""
    try:
        yield
    except SystemExit as exc:
        raise PluginExit(exc.code) from exc


def cell_rows(job: Job, handle, batch: int, prompt_len: int, peak_bw: float) -> list[dict]:
    """One cell measured in this process (by either executor): its rows, a failed cell's included."""
    try:
        with contained():
            return run_cell(job, handle, batch, prompt_len, peak_bw)
    except PluginExit as exc:  # run_cell records other exceptions itself
        return failed_rows(job, [(batch, prompt_len)], "error", one_line(exc))[0]


class CellsAbandoned(Exception):
    """Raised by an executor's ``run_cell`` when the backend can no longer load: the remaining cells are already
    recorded (harness.run.stages.record_load_failure) and the cell loop stops."""


class Executor(Protocol):
    """Where the backend runs. ``start`` loads it (and validates it and measures the harness's overhead when asked)
    and returns False when the load failed (every cell then recorded as such); ``run_cell`` returns a cell's rows."""

    def start(self, validate: bool, overhead: bool) -> bool: ...

    def run_cell(self, batch: int, prompt_len: int) -> list[dict]: ...

    def generate(self) -> int: ...

    def close(self, finished: bool) -> None: ...


class InProcess:
    """The backend in this process: the fastest path when nothing crashes (``isolation=none``)."""

    def __init__(self, job: Job, writer: ResultsWriter | None, run_info: dict, plugins=None):
        self.job, self.writer, self.run_info = job, writer, run_info
        self.handle = (plugins or registry()).open(job.backend)
        self.peak_bw = 0.0

    def start(self, validate: bool, overhead: bool) -> bool:
        try:
            with contained():
                self.peak_bw = open_backend(self.job, self.handle, self.run_info, validate=validate,
                                            overhead=overhead) or 0.0
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded for every cell
            record_load_failure(self.job, self.writer, self.run_info, exc)
            return False
        return True

    def run_cell(self, batch: int, prompt_len: int) -> list[dict]:
        return cell_rows(self.job, self.handle, batch, prompt_len, self.peak_bw)

    def generate(self) -> int:
        """task=generate (one prompt) or task=chat (a prompt loop on stdin, harness/run/chat.py)."""
        from harness.run.chat import run_chat_task
        from harness.run.generate import run_generate_task

        run = run_chat_task if self.job.cfg.task == "chat" else run_generate_task
        with contained():
            return run(self.job.cfg, self.job, self.handle)

    def close(self, finished: bool) -> None:
        try:
            with contained():
                self.handle.close()
        except Exception as exc:  # noqa: BLE001 - a failing close must not hide the job's own outcome
            self.run_info["close_error"] = one_line(exc)


def check_quant(job: Job, run_info: dict) -> None:
    """The backend refuses a weight-only scheme it cannot run (UserError): for the Python API too (no precheck),
    and on both executors."""
    from harness.plugin.options import readable_options

    with contained():
        registry().check_quant(job.backend, job.quant, readable_options(job.cfg.backend.options), job.device)


def run_pipeline(cfg, out_dir, executor_class, plugins=None) -> int:
    """Run one job's stages with ``executor_class`` (InProcess or InWorker); returns the status the job itself
    decided (1: the load failed, a validate task failed, generation failed); record/outcome.py judges the rest."""
    job, writer, run_info = start_job(cfg, out_dir)
    if run_info is None:  # resumed, and every cell is already done
        return 0
    check_quant(job, run_info)
    executor = executor_class(job, writer, run_info, plugins) if plugins else executor_class(job, writer, run_info)
    finished = False
    try:
        validate = cfg.task == "validate" or (cfg.task == "benchmark" and cfg.validation.enabled)
        if not executor.start(validate=validate, overhead=cfg.task == "benchmark"):
            finished = True
            return 1
        code = 0
        if cfg.task == "build":
            progress.say(f"{job.backend}: artifacts ready ({run_info.get('load_seconds', 0.0):.1f} s)")
        elif cfg.task == "validate":
            code = 0 if job.validation == "pass" else 1
        elif cfg.task in ("generate", "chat"):
            code = executor.generate()
        else:
            with contextlib.suppress(CellsAbandoned):
                sweep_cells(job, writer, executor.run_cell)
            code = 1 if "load_error" in run_info else 0  # a restarted worker that failed to load
        finished = True
        return code
    finally:
        executor.close(finished)
        write_run(out_dir, run_info)
