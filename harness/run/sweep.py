"""The cell loop of a benchmark job: run every cell of the grid not yet in results.csv, one at a time, writing each
as it finishes.

A cell that fails (out of memory, backend error) is recorded with its status and error and the sweep goes on;
every finished cell is on disk before the next one starts. How a cell runs (in this process, or in an isolation
worker) is the caller's ``run_one``; what it measures is :mod:`harness.run.cell`.
"""
from __future__ import annotations

import gc

import torch

from harness import progress
from harness.measure.instrument import host_bound_phases
from harness.measure.machine_state import MachineWatch, warnings_for
from harness.measure.memory import MemorySampler
from harness.profile.cell import after_timing
from harness.record.results import ResultsWriter, rows_for_cell
from harness.record.samples import write_cell_samples
from harness.record.summary import print_job_summary
from harness.run.cell import cell_metrics, time_cell
from harness.run.plan import Job


def is_oom(exc: BaseException) -> bool:
    """The device ran out of memory (status ``oom``: larger cells are skipped). A failed host allocation
    (MemoryError, std::bad_alloc, torch's CPU allocator) is an ``error``: larger cells may still fit the device."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, MemoryError):
        return False
    text = str(exc).lower()
    if "cpuallocator" in text or "bad_alloc" in text:
        return False
    return "out of memory" in text or ("failed to allocate" in text and ("cuda" in text or "gpu" in text))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}"


def release_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - a poisoned CUDA context: later cells will say so (isolation=process helps)
            pass


def run_cell(job: Job, handle, batch: int, prompt_len: int, peak_bw: float) -> list[dict]:
    """Measure one cell in this process; its result rows (a failed cell gives one row with status and error)."""
    identity = job.identity(batch, prompt_len)
    extra = job.row_context()
    release_memory(job.device)  # the window's process reading starts from what the backend holds, not a cache
    sampler = MemorySampler(job.device, job.cfg.measure.memory_interval_ms / 1e3)
    try:
        with sampler, MachineWatch(job.device) as watch:
            samples = time_cell(job, handle, batch, prompt_len)
        after = after_timing(job, handle, batch, prompt_len, samples)  # profile, label, energy: untimed
        state = {**watch.state, "rel_ci": samples.rel_ci, "ci_target_met": samples.ci_target_met}
        n = job.cfg.grid.new_tokens
        write_cell_samples(job.out_dir, identity, samples.prefill_ms, samples.decode_per_iteration(n),
                           samples.e2e_ms, state, samples.prefill_device_ms,
                           samples.per_iteration(samples.decode_device_ms, n))
        metrics = cell_metrics(job, batch, prompt_len, samples, sampler.peaks, peak_bw) + after.metric_rows()
        return rows_for_cell(identity, metrics, status="ok", error="", iterations=samples.iterations,
                             machine_warnings="; ".join(warnings_for(watch.state)),
                             host_bound="+".join(host_bound_phases(samples)), **after.relabel(extra))
    except Exception as exc:  # noqa: BLE001 - a failed cell is a result, not the end of the sweep
        status = "oom" if is_oom(exc) else "error"
        release_memory(job.device)
        return rows_for_cell(identity, [], status=status, error=one_line(exc), iterations=0, **extra)


def failed_rows(job: Job, cells, status: str, error: str) -> list[list[dict]]:
    extra = {**job.row_context(), "iterations": 0}
    return [rows_for_cell(job.identity(b, p), [], status=status, error=error, **extra) for b, p in cells]


def todo_cells(job: Job, writer: ResultsWriter) -> list[tuple[int, int]]:
    return [c for c in job.cells if not writer.is_done(job.identity(*c))]


def sweep_cells(job: Job, writer: ResultsWriter, run_one) -> None:
    """Run every missing cell with ``run_one(batch, prompt_len) -> rows``, writing each as it finishes.

    After an out-of-memory cell, with ``measure.skip_larger_after_oom``, the cells at least as large in both
    batch and prompt length are recorded as skipped instead of being tried."""
    todo = todo_cells(job, writer)
    if len(todo) < len(job.cells):
        progress.say(f"resume: {len(job.cells) - len(todo)} of {len(job.cells)} cells already in results.csv")
    oom_cells: list[tuple[int, int]] = []
    with progress.cells(len(todo), f"{job.backend}") as bar:
        for batch, prompt_len in todo:
            bar.describe(f"{job.backend} b={batch} p={prompt_len}")
            bigger_than = [c for c in oom_cells if batch >= c[0] and prompt_len >= c[1]]
            if bigger_than and job.cfg.measure.skip_larger_after_oom:
                b0, p0 = bigger_than[0]
                rows = failed_rows(job, [(batch, prompt_len)], "skipped",
                                   f"not run: the smaller cell b={b0} p={p0} ran out of memory")[0]
            else:
                rows = run_one(batch, prompt_len)
            if rows[0]["status"] == "oom":
                oom_cells.append((batch, prompt_len))
            writer.append_cell(rows)
            bar.advance(rows[0]["status"])
    print_job_summary(writer.results_path)  # stdout: at most 100 columns, intervals and flags
