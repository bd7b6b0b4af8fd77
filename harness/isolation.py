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
from harness.errors import UserError
from harness.plan import plan_job
from harness.plugins import registry
from harness.results import write_run_json
from harness.roofline import measure_copy_bandwidth
from harness.stages import harness_overhead, load_backend, record_load_failure, run_validation, start_job
from harness.sweep import failed_rows, one_line, run_cell, sweep_cells

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


def _worker(conn, cfg_container: dict, out_dir: str, parent_pid: int, validate: bool, overhead: bool,
            validation: str, peak_bw: float | None) -> None:
    """Child process: load, (validate), (measure the harness's overhead), then run cells until told to stop.
    Before each phase it tells the parent which one starts, so that a hang or crash is timed and named by phase."""
    _die_with_parent(parent_pid)
    from harness import console

    console.quiet()  # a spawned interpreter: the parent's warning filters are not inherited
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops this process itself
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(cfg_container)
    job = plan_job(cfg, Path(out_dir))
    job.validation = validation
    info: dict[str, Any] = {}
    handle = registry().open(job.backend)
    try:
        conn.send(("phase", "load"))
        load_backend(job, handle, info)
        if validate:
            conn.send(("phase", "validation"))
            info["validation"] = run_validation(job, handle)
        if peak_bw is None:
            peak_bw = measure_copy_bandwidth(job.device)
            info["peak_copy_bandwidth_gb_s"] = peak_bw / 1e9
        if overhead:
            conn.send(("phase", "overhead"))
            info["harness_overhead"] = harness_overhead(job, handle)
        conn.send(("ready", info, job.info, job.validation, peak_bw))
        while True:
            request = conn.recv()
            if request is None:
                break
            batch, prompt_len = request
            conn.send(("rows", run_cell(job, handle, batch, prompt_len, peak_bw)))
    except UserError as err:
        conn.send(("user_error", err.problem, err.fix))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which records it
        conn.send(("load_error", one_line(exc)))
    finally:
        try:
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
    def __init__(self, cfg, out_dir: Path, validate: bool, overhead: bool, validation: str, peak_bw: float | None):
        from omegaconf import OmegaConf

        if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
            # e.g. 'loky' inside a joblib worker: the spawned child would be told to use a method it cannot find
            mp.set_start_method("spawn", force=True)
        ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited CUDA context
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, daemon=True,
                                   args=(child, OmegaConf.to_container(cfg, resolve=True), str(out_dir), os.getpid(),
                                         validate, overhead, validation, peak_bw))
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


def run_job_isolated(cfg, out_dir: Path) -> int:
    """A benchmark job whose backend runs in child processes (harness.job.run_job decides when)."""
    job, writer, run_info = start_job(cfg, out_dir)
    if run_info is None:
        return 0
    timeout = cfg.measure.cell_timeout_s
    timeouts = {"start": cfg.measure.load_timeout_s, "load": cfg.measure.load_timeout_s, "validation": timeout,
                "overhead": timeout}
    state: dict[str, Any] = {"worker": None, "starting": None, "validated": not cfg.validation.enabled,
                             "overhead_done": False, "ready_once": False, "restarts": 0, "peak_bw": None, "pids": []}

    def ready_worker() -> Worker | None:
        while state["worker"] is None:
            worker = state["starting"] = Worker(cfg, out_dir, not state["validated"], not state["overhead_done"],
                                                job.validation, state["peak_bw"])
            state["pids"].append(worker.process.pid)  # the processes that used the device (NVML lists them)
            message = worker.start(timeouts)
            state["starting"] = None
            if message[0] == "ready":
                _, info, job.info, job.validation, state["peak_bw"] = message
                if not state["ready_once"]:  # a restarted process reports only its load again
                    run_info.update(info)
                state["validated"] = state["overhead_done"] = state["ready_once"] = True
                state["worker"] = worker
                break
            worker.kill()
            if message[0] == "user_error":
                raise UserError(message[1], message[2])
            if message[0] == "load_error":
                record_load_failure(job, writer, run_info, RuntimeError(message[1]))
                return None
            where = PHASE_WORDS[worker.phase]
            if message[0] == "died":
                status, what = "crashed", f"crashed: backend process {message[1]} {where}"
            else:
                key = "measure.load_timeout_s" if worker.phase in ("start", "load") else "measure.cell_timeout_s"
                status = "timeout"
                what = f"timeout: no result after {timeouts[worker.phase]:.0f} s {where} ({key}); process killed"
            progress.say(f"{job.backend}: {what}")
            if worker.phase == "validation":  # recorded as a failed validation; the cells still get their chance
                job.validation, state["validated"] = "fail", True
                run_info["validation_error"] = what
            elif worker.phase == "overhead":  # informative only, as in-process: recorded, then the cells run
                run_info["harness_overhead"], state["overhead_done"] = {"error": what}, True
            else:
                record_load_failure(job, writer, run_info, RuntimeError(what), status=status)
                return None
            state["restarts"] += 1
        return state["worker"]

    def run_one(batch: int, prompt_len: int) -> list[dict]:
        worker = ready_worker()
        if worker is None:
            raise _LoadFailed()
        worker.conn.send((batch, prompt_len))
        message = worker.wait(timeout)
        if message[0] == "rows":
            return message[1]
        status = "crashed" if message[0] == "died" else "timeout"
        progress.say(f"{job.backend} b={batch} p={prompt_len}: {status} ({message[1]}); starting a new process")
        state["worker"], state["restarts"] = None, state["restarts"] + 1
        return failed_rows(job, [(batch, prompt_len)], status, message[1])[0]

    finished = False
    try:
        if ready_worker() is not None:
            sweep_cells(job, writer, run_one)
        finished = True
    except _LoadFailed:
        finished = True
    finally:
        for worker in (state["worker"], state["starting"]):
            if worker is not None:  # stopped politely after the last cell; killed at once on Ctrl-C or an error
                worker.stop() if finished else worker.kill()
        run_info["isolation"] = {"mode": "process", "restarts": state["restarts"], "worker_pids": state["pids"]}
        write_run_json(out_dir, run_info)
    return 0 if "load_error" not in run_info else 1


class _LoadFailed(Exception):
    """A restarted backend process failed to load: the remaining cells were recorded by record_load_failure."""
