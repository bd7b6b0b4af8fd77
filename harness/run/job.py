"""The one place that runs a job: every entry point (the ``enginebench`` command and each job of a multirun, and
the Python API) calls :func:`run_job`, which picks the executor of the job's stages (harness/run/pipeline.py) from its
task and ``isolation``:

- task=benchmark, isolation=process: :class:`harness.run.isolation.InWorker` (a child process per backend; crashes
  cost one cell);
- otherwise :class:`harness.run.pipeline.InProcess`: load, then build (stop) | validate | generate | chat |
  validate + cells.
Returns the exit status (harness/record/outcome.py), decided here for every path: 0 every cell ok and every validation
passed, 1 otherwise — a plugin's SystemExit included; the status and a one-line summary go into run.json and, with
the run directory, onto stderr. Bad input raises UserError.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from harness import progress
from harness.config.schema import JobSpec
from harness.errors import EXIT_FAILED, EXIT_USER_ERROR, UserError
from harness.measure.machine_state import snapshot
from harness.measure.memory import lifetime_peaks
from harness.plugin.plugins import PluginRegistry
from harness.record.outcome import job_outcome
from harness.record.results import read_complete_rows
from harness.record.runrecord import read_run
from harness.run import console, multirun
from harness.run.outdir import Replacement, check_ownership, exclusive, save_hydra_config
from harness.run.pinning import pinned
from harness.run.pipeline import InProcess, PluginExit, run_pipeline
from harness.run.sweep import one_line


def run_job(cfg: JobSpec, out_dir: Path, plugins: PluginRegistry | None = None) -> int:
    """Run one composed, checked job (harness/compose.py) into ``out_dir``; returns its exit status, also written
    into its run.json.

    ``device=pin`` holds a device slot for the job's lifetime; under a parallel multirun launcher the job runs
    isolated unless the command line said isolation=none (harness.run.multirun). A UserError is recorded in run.json
    too, then raised."""
    cfg = dataclasses.replace(cfg, isolation=multirun.isolation_for(cfg))  # what really runs is what run.json records
    pin, started = None, time.time()
    with exclusive(out_dir):  # one writer per directory, and only with the configuration it holds (outdir.py)
        check_ownership(cfg, out_dir, multirun=multirun.in_multirun())
        save_hydra_config(cfg, out_dir)  # accepted: now Hydra's .hydra/ may be written
        replacement = Replacement(out_dir, bool(cfg.overwrite and not cfg.resume))
        try:
            with pinned(cfg) as pin, replacement:
                code = _dispatch(cfg, out_dir, plugins)
        except UserError as err:
            if (out_dir / "run.json").exists() and not replacement.restored:
                multirun.record_job_end(out_dir, EXIT_USER_ERROR, err.one_line(), pin=pin)
            raise
        if (out_dir / "run.json").exists():
            code, summary = job_outcome(out_dir, cfg.task, code)
            multirun.record_job_end(out_dir, code, pin=pin, outcome=summary, machine_state=_end_state(out_dir),
                                    memory_lifetime_peak_mib=lifetime_peaks(
                                        read_complete_rows(out_dir / "results.csv")) or None,
                                    started_unix=round(started, 1), wall_seconds=round(time.time() - started, 1))
            hidden = console.take_hidden_line()  # before the outcome, which stays the job's last line
            if hidden:
                progress.say(hidden)
            progress.say(f"enginebench: {summary}; results: {out_dir}")
    return code


def _end_state(out_dir: Path) -> dict:
    """run.json's machine state with a reading at the end of the job added to the one from its start."""
    info = read_run(out_dir)
    if not info.readable:
        return {}
    return {**(info.machine_state or {}), "end": snapshot(info.device or "cpu")}


def _dispatch(cfg, out_dir: Path, plugins: PluginRegistry | None) -> int:
    if cfg.task == "benchmark":  # measure.repeats: each repeat a fresh load of the backend (harness/run/repeats.py)
        from harness.run.repeats import run_repeats

        return run_repeats(cfg, out_dir, lambda c: _dispatch_once(c, out_dir, plugins))
    return _dispatch_once(cfg, out_dir, plugins)


def _dispatch_once(cfg, out_dir: Path, plugins: PluginRegistry | None) -> int:
    """The job's stages (harness/run/pipeline.py) on the executor its task and ``isolation`` call for. A SystemExit
    that escapes them (a plugin's, from a hook or an observer) fails the job instead of ending the command."""
    if cfg.isolation == "process" and cfg.task == "benchmark":  # validate / build / generate have no cells to protect
        from harness.run.isolation import InWorker as executor
    else:
        executor = InProcess
    try:
        return run_pipeline(cfg, out_dir, executor, plugins)
    except SystemExit as exc:
        progress.say(f"enginebench: {one_line(PluginExit(exc.code))}")
        if (out_dir / "run.json").exists():
            multirun.record_job_end(out_dir, EXIT_FAILED, one_line(PluginExit(exc.code)))
        return EXIT_FAILED
