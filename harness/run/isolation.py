"""``isolation=process``: the backend runs in a child process, so a crash inside a native library (segfault,
abort, a CUDA error that poisons the context) or a hung cell costs one cell, not the sweep.

The parent owns the results files; the child (a spawned worker) loads the backend, validates it once, and runs
one cell per request, sending back the rows. When the child dies, the cell is recorded as ``crashed`` with its
exit signal; when it outlives ``measure.cell_timeout_s``, it is killed and the cell recorded as ``timeout``; in
both cases a fresh child (backend loaded again, artifacts reused from the cache) takes the remaining cells.
Every phase that calls the backend runs under a timeout and a crash in it is named after it: the load
(``measure.load_timeout_s``; all remaining cells recorded as failed), the validation and the harness-overhead
measurement (``measure.cell_timeout_s``; recorded in run.json, then a fresh child runs the cells without them), and
each cell. The child dies with the parent (Linux ``PR_SET_PDEATHSIG``, elsewhere a watchdog thread), so a killed
sweep leaves no worker behind, and it ignores Ctrl-C: the parent ends it and prints the one line.
Trade-off: each restart pays the backend's load time, and the per-cell request adds a little latency outside the
timed region; in-process (``isolation=none``, the default) is faster when nothing crashes.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness import progress
from harness.config.schema import JobSpec
from harness.errors import UserError
from harness.plugin.plugins import registry
from harness.profile.cell import adopt_labels
from harness.run.pipeline import CellsAbandoned, cell_rows, contained
from harness.run.plan import plan_job
from harness.run.stages import open_backend, record_load_failure, traceback_tail
from harness.run.sweep import failed_rows, one_line

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PHASE_WORDS = {"start": "while starting", "load": "while loading", "validation": "during validation",
               "overhead": "during the harness-overhead measurement"}


def _die_with_parent(parent_pid: int) -> None:
    """End this process when the parent does: the kernel sends SIGKILL (Linux), else a thread polls the parent."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        else:
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _worker(conn, cfg: JobSpec, out_dir: str, parent_pid: int, validate: bool, overhead: bool,
            validation: str, peak_bw: float | None) -> None:
    """Child process: the backend's stages (harness.run.stages.open_backend), then cells until told to stop. Before each
    stage it tells the parent which one starts, so that a hang or crash is timed and named by phase."""
    _die_with_parent(parent_pid)
    from harness.run import console

    console.quiet()  # a spawned interpreter: the parent's warning filters are not inherited
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops this process itself
    job = plan_job(cfg, Path(out_dir))
    job.validation = validation
    info: dict[str, Any] = {}
    handle = registry().open(job.backend)
    try:
        with contained():
            peak_bw = open_backend(job, handle, info, validate=validate, overhead=overhead, peak_bw=peak_bw,
                                   phase=lambda name: conn.send(("phase", name)))
        conn.send(("ready", info, job.info, job.validation, peak_bw))
        while True:
            request = conn.recv()
            if request is None:
                break
            batch, prompt_len = request
            conn.send(("rows", cell_rows(job, handle, batch, prompt_len, peak_bw)))
    except UserError as err:
        conn.send(("user_error", err.problem, err.fix))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which records it
        conn.send(("load_error", one_line(exc), traceback_tail(exc)))
    finally:
        try:
            with contained():
                handle.close()
        except Exception:  # noqa: BLE001
            pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name} ({-code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Worker:
    def __init__(self, cfg: JobSpec, out_dir: Path, validate: bool, overhead: bool, validation: str,
                 peak_bw: float | None):
        if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
            # e.g. 'loky' inside a joblib worker: the spawned child would be told to use a method it cannot find
            mp.set_start_method("spawn", force=True)
        ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited CUDA context
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, daemon=True,
                                   args=(child, cfg, str(out_dir), os.getpid(), validate, overhead, validation,
                                         peak_bw))  # the frozen spec, pickled (its backend by name and values)
        with _sigint_ignored():  # inherited through exec: a Ctrl-C during the child's start-up prints nothing
            self.process.start()
        child.close()
        self.phase = "start"

    def start(self, timeouts: dict[str, float | None]) -> tuple:
        """Wait through the start-up phases (each under its own timeout); returns the first other message.
        ``self.phase`` then names the phase it came in (where a death or a timeout happened)."""
        while True:
            message = self.wait(timeouts[self.phase])
            if message[0] != "phase":
                return message
            self.phase = message[1]

    def wait(self, timeout: float | None):
        """The next message, or ('died', why) / ('timeout', ...) — never blocks past the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            closed = False
            if self.conn.poll(0.2):
                try:
                    return self.conn.recv()
                except EOFError:  # the child's end is gone: it died (messages sent before that were read)
                    closed = True
            if closed or not self.process.is_alive():
                self.process.join()
                return ("died", _describe_exit(self.process.exitcode))
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                return ("timeout", f"no result after {timeout:.0f} s; process killed")

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=30)
        self.kill()


@contextlib.contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class InWorker:
    """The process executor (harness/run/pipeline.py): the backend in a child process, restarted after a crash or a
    timeout; each start-up phase and each cell runs under its timeout."""

    def __init__(self, job, writer, run_info: dict):
        self.job, self.writer, self.run_info = job, writer, run_info
        measure = job.cfg.measure
        self.timeout = measure.cell_timeout_s
        self.timeouts = {"start": measure.load_timeout_s, "load": measure.load_timeout_s,
                         "validation": self.timeout, "overhead": self.timeout}
        self.worker: Worker | None = None
        self.starting: Worker | None = None
        self.validated = self.overhead_done = self.ready_once = False
        self.restarts, self.peak_bw, self.pids = 0, None, []

    def start(self, validate: bool, overhead: bool) -> bool:
        self.validated, self.overhead_done = not validate, not overhead
        return self._ready_worker() is not None

    def _ready_worker(self) -> Worker | None:
        """A worker past its start-up phases, starting new ones as needed; None when the backend cannot load
        (the remaining cells are then recorded)."""
        job, run_info = self.job, self.run_info
        while self.worker is None:
            worker = self.starting = Worker(job.cfg, job.out_dir, not self.validated, not self.overhead_done,
                                            job.validation, self.peak_bw)
            self.pids.append(worker.process.pid)  # the processes that used the device (NVML lists them)
            message = worker.start(self.timeouts)
            self.starting = None
            if message[0] == "ready":
                _, info, job.info, job.validation, self.peak_bw = message
                if not self.ready_once:  # a restarted process reports only its load again
                    run_info.update(info)
                self.validated = self.overhead_done = self.ready_once = True
                self.worker = worker
                break
            worker.kill()
            if message[0] == "user_error":
                raise UserError(message[1], message[2])
            if message[0] == "load_error":
                record_load_failure(job, self.writer, run_info, RuntimeError(message[1]), trace=message[2])
                return None
            if not self._phase_failed(worker.phase, message):
                return None
            self.restarts += 1
        return self.worker

    def _phase_failed(self, phase: str, message: tuple) -> bool:
        """Record a start-up phase that died or timed out; True when the cells still get their chance."""
        job, run_info = self.job, self.run_info
        where = PHASE_WORDS[phase]
        if message[0] == "died":
            status, what = "crashed", f"crashed: backend process {message[1]} {where}"
        else:
            key = "measure.load_timeout_s" if phase in ("start", "load") else "measure.cell_timeout_s"
            status = "timeout"
            what = f"timeout: no result after {self.timeouts[phase]:.0f} s {where} ({key}); process killed"
        progress.say(f"{job.backend}: {what}")
        if phase == "validation":  # a failed validation (harness/record/outcome.py); the cells still get their chance
            job.validation, self.validated = "fail", True
            run_info["validation_error"] = what
            return True
        if phase == "overhead":  # informative only, as in-process: recorded, then the cells run
            run_info["harness_overhead"], self.overhead_done = {"error": what}, True
            return True
        record_load_failure(job, self.writer, run_info, RuntimeError(what), status=status)
        return False

    def run_cell(self, batch: int, prompt_len: int) -> list[dict]:
        worker = self._ready_worker()
        if worker is None:
            raise CellsAbandoned()
        worker.conn.send((batch, prompt_len))
        message = worker.wait(self.timeout)
        if message[0] == "rows":
            if isinstance(self.run_info.get("backend_info"), dict):  # run.json: the label of what the cell ran
                adopt_labels(self.run_info["backend_info"], message[1])
            return message[1]
        status = "crashed" if message[0] == "died" else "timeout"
        progress.say(f"{self.job.backend} b={batch} p={prompt_len}: {status} ({message[1]}); starting a new process")
        self.worker, self.restarts = None, self.restarts + 1
        return failed_rows(self.job, [(batch, prompt_len)], status, message[1])[0]

    def generate(self) -> int:
        raise NotImplementedError("task=generate runs in-process (harness/run/job.py)")

    def close(self, finished: bool) -> None:
        for worker in (self.worker, self.starting):
            if worker is not None:  # stopped politely after the last cell; killed at once on Ctrl-C or an error
                worker.stop() if finished else worker.kill()
        self.run_info["isolation"] = {"mode": "process", "restarts": self.restarts, "worker_pids": self.pids}
