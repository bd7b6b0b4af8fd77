"""The one place that runs a job: every entry point (the ``enginebench`` command and each job of a multirun, and
the Python API) calls :func:`run_job`, which picks how the job runs from its task and ``isolation``.

- task=benchmark, isolation=process: :mod:`harness.isolation` (a child process per backend; crashes cost one cell);
- otherwise in this process: load, then build (stop) | validate | generate | chat | validate + sweep the grid.
Returns the exit status (harness/outcome.py): 0 every cell ok and every validation passed, 1 otherwise; the
status and a one-line summary go into run.json and, with the run directory, onto stderr. Bad input raises
UserError.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness import multirun, progress
from harness.errors import EXIT_USER_ERROR, UserError
from harness.machine_state import snapshot
from harness.memory import lifetime_peaks
from harness.outcome import job_outcome
from harness.outdir import check_ownership, exclusive, remove_results
from harness.pinning import pinned
from harness.plugins import PluginRegistry, registry
from harness.results import read_complete_rows, write_run_json
from harness.stages import (
    load_backend,
    prepare_benchmark,
    record_load_failure,
    run_validation,
    start_job,
)
from harness.sweep import one_line, run_cell, sweep_cells


def run_job(cfg, out_dir: Path, plugins: PluginRegistry | None = None) -> int:
    """Run one composed, checked job into ``out_dir``; returns its exit status, also written into its run.json.

    ``device=pin`` holds a device slot for the job's lifetime; under a parallel multirun launcher the job runs
    isolated unless the command line said isolation=none (harness.multirun). A UserError is recorded in run.json
    too, then raised."""
    cfg.isolation = multirun.isolation_for(cfg)  # what really runs is what run.json records
    pin = None
    with exclusive(out_dir):  # one writer per directory, and only with the configuration it holds (outdir.py)
        check_ownership(cfg, out_dir, multirun=multirun.in_multirun())
        if cfg.overwrite and not cfg.resume:
            remove_results(out_dir)
        try:
            with pinned(cfg) as pin:
                code = _dispatch(cfg, out_dir, plugins)
        except UserError as err:
            if (out_dir / "run.json").exists():
                multirun.record_job_end(out_dir, EXIT_USER_ERROR, err.one_line(), pin=pin)
            raise
        if (out_dir / "run.json").exists():
            code, summary = job_outcome(out_dir, cfg.task, code)
            multirun.record_job_end(out_dir, code, pin=pin, outcome=summary, machine_state=_end_state(out_dir),
                                    memory_lifetime_peak_mib=lifetime_peaks(
                                        read_complete_rows(out_dir / "results.csv")) or None)
            progress.say(f"enginebench: {summary}; results: {out_dir}")
    return code


def _end_state(out_dir: Path) -> dict:
    """run.json's machine state with a reading at the end of the job added to the one from its start."""
    try:
        info = json.loads((out_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return {**info.get("machine_state", {}), "end": snapshot(info.get("device", "cpu"))}


def _dispatch(cfg, out_dir: Path, plugins: PluginRegistry | None) -> int:
    if cfg.isolation == "process" and cfg.task == "benchmark":  # validate / build / generate have no cells to protect
        from harness.isolation import run_job_isolated

        return run_job_isolated(cfg, out_dir)
    return _run_in_process(cfg, out_dir, plugins or registry())


def _run_in_process(cfg, out_dir: Path, plugins: PluginRegistry) -> int:
    job, writer, run_info = start_job(cfg, out_dir)
    if run_info is None:
        return 0
    options = {k: v for k, v in run_info["config"]["backend"].items() if k != "name"}
    plugins.check_quant(job.backend, job.quant, options, job.device)  # also for API callers (no precheck)
    handle = plugins.open(job.backend)
    try:
        try:
            load_backend(job, handle, run_info)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded for every cell
            record_load_failure(job, writer, run_info, exc)
            return 1
        if cfg.task == "build":
            progress.say(f"{job.backend}: artifacts ready ({run_info['load_seconds']:.1f} s)")
            return 0
        if cfg.task == "validate" or (cfg.task == "benchmark" and cfg.validation.enabled):
            run_info["validation"] = run_validation(job, handle)
            if cfg.task == "validate":
                return 0 if job.validation == "pass" else 1
        if cfg.task == "generate":
            from harness.generate import run_generate_task

            return run_generate_task(cfg, job, handle)
        if cfg.task == "chat":  # load once, then a prompt loop on stdin
            from harness.chat import run_chat_task

            return run_chat_task(cfg, job, handle)
        peak_bw = prepare_benchmark(job, handle, run_info)
        sweep_cells(job, writer, lambda b, p: run_cell(job, handle, b, p, peak_bw))
    finally:
        try:
            handle.close()
        except Exception as exc:  # noqa: BLE001 - a failing close must not hide the job's own outcome
            run_info["close_error"] = one_line(exc)
        write_run_json(out_dir, run_info)
    return 0
