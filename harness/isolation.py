"""``isolation=process``: the backend runs in a child process, so a crash inside a native library (segfault,
abort, a CUDA error that poisons the context) or a hung cell costs one cell, not the sweep.

The parent owns the results files; the child (a spawned worker) loads the backend, validates it once, and runs
one cell per request, sending back the rows. When the child dies, the cell is recorded as ``crashed`` with its
exit signal; when it outlives ``measure.cell_timeout_s``, it is killed and the cell recorded as ``timeout``; in
both cases a fresh child (backend loaded again, artifacts reused from the cache) takes the remaining cells.
Trade-off: each restart pays the backend's load time, and the per-cell request adds a little latency outside the
timed region; in-process (``isolation=none``, the default) is faster when nothing crashes.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import time
from pathlib import Path
from typing import Any

from harness import progress
from harness.errors import UserError
from harness.results import write_run_json
from harness.plan import plan_job
from harness.plugins import registry
from harness.stages import load_backend, prepare_benchmark, record_load_failure, run_validation, start_job
from harness.sweep import failed_rows, one_line, run_cell, sweep_cells

LOAD_TIMEOUT_S = 3600.0  # building an engine can take long; a load is never cut by the cell timeout


def _worker(conn, cfg_container: dict, out_dir: str, validate: bool, validation: str,
            peak_bw: float | None) -> None:
    """Child process: load, (validate), measure once per job (a restarted child reuses ``peak_bw``), then run
    cells until told to stop."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(cfg_container)
    job = plan_job(cfg, Path(out_dir))
    job.validation = validation
    info: dict[str, Any] = {}
    handle = registry().open(job.backend)
    try:
        load_backend(job, handle, info)
        if validate:
            info["validation"] = run_validation(job, handle)
        if peak_bw is None:
            peak_bw = prepare_benchmark(job, handle, info)
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
    def __init__(self, cfg, out_dir: Path, validate: bool, validation: str, peak_bw: float | None):
        from omegaconf import OmegaConf

        if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
            # e.g. 'loky' inside a joblib worker: the spawned child would be told to use a method it cannot find
            mp.set_start_method("spawn", force=True)
        ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited CUDA context
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, daemon=True,
                                   args=(child, OmegaConf.to_container(cfg, resolve=True), str(out_dir), validate,
                                         validation, peak_bw))
        self.process.start()
        child.close()

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


def run_job_isolated(cfg, out_dir: Path) -> int:
    """A benchmark job whose backend runs in child processes (harness.job.run_job decides when)."""
    job, writer, run_info = start_job(cfg, out_dir)
    if run_info is None:
        return 0
    timeout = cfg.measure.cell_timeout_s
    state: dict[str, Any] = {"worker": None, "validated": False, "restarts": 0, "peak_bw": None, "pids": []}

    def ready_worker() -> Worker | None:
        if state["worker"] is not None:
            return state["worker"]
        validate = cfg.validation.enabled and not state["validated"]
        worker = Worker(cfg, out_dir, validate, job.validation, state["peak_bw"])
        state["pids"].append(worker.process.pid)  # the processes that used the device (NVML lists them)
        message = worker.wait(LOAD_TIMEOUT_S)
        if message[0] == "ready":
            _, info, job.info, job.validation, state["peak_bw"] = message
            if not state["validated"]:
                run_info.update(info)
            state["validated"], state["worker"] = True, worker
            return worker
        worker.kill()
        if message[0] == "user_error":
            raise UserError(message[1], message[2])
        reason = message[1] if message[0] == "load_error" else f"backend process {message[1]} while loading"
        record_load_failure(job, writer, run_info, RuntimeError(reason),
                            status="crashed" if message[0] == "died" else None)
        return None

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

    try:
        if ready_worker() is not None:
            sweep_cells(job, writer, run_one)
    except _LoadFailed:
        pass
    finally:
        if state["worker"] is not None:
            state["worker"].stop()
        run_info["isolation"] = {"mode": "process", "restarts": state["restarts"], "worker_pids": state["pids"]}
        write_run_json(out_dir, run_info)
    return 0 if "load_error" not in run_info else 1


class _LoadFailed(Exception):
    """A restarted backend process failed to load: the remaining cells were recorded by record_load_failure."""
