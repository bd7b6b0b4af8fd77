"""Repeated runs (``measure.repeats=K``): every configuration measured K times, each time by a fresh load of its
backend, with the repeats of different configurations interleaved so that a drift of the machine (clocks,
temperature, a neighbour) hits all of them alike.

- One job (a single run): the job loops over its K repeats, loading the backend again for each (a new worker process
  with ``isolation=process``); every row carries ``repeat`` and the samples of repeat r > 0 go to ``*_r<r>.npz``.
- A multirun: :func:`expand_multirun` puts ``measure.repeat=0,...,K-1`` first on the command line. Hydra's basic
  sweeper takes the cartesian product of the sweep overrides in command-line order, first varying slowest, so the
  jobs run round by round (A0 B0 C0 A1 B1 C1 ...), each job one repeat of one configuration in a directory of its
  own. (Parallel launchers start the same jobs in that order, several at a time.)

Each run.json records which repeat it holds, of how many, when each repeat's load started and how the repeats were
scheduled; the report lists that order (harness/report/repeats.py).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

MULTIRUN_FLAGS = ("-m", "--multirun")


def _value_of(argv: list[str], key: str) -> str | None:
    found = None
    for arg in argv:
        if arg.startswith(key + "="):
            found = arg.split("=", 1)[1]
    return found


def expand_multirun(argv: list[str]) -> list[str]:
    """The command line of a multirun with ``measure.repeats=K`` (K > 1), with ``measure.repeat=0,...,K-1`` as its
    first override, so that the repeats become the sweep's outermost (slowest) dimension: rounds of every
    configuration. Any other command line is returned as it is (a bad K is left to the config check)."""
    if not set(MULTIRUN_FLAGS) & set(argv) or _value_of(argv, "measure.repeat") is not None:
        return argv
    text = _value_of(argv, "measure.repeats")
    try:
        repeats = int(text) if text is not None else 1
    except ValueError:
        return argv
    if repeats < 2:
        return argv
    first = next((i for i, a in enumerate(argv) if "=" in a and not a.startswith("-")), len(argv))
    return [*argv[:first], "measure.repeat=" + ",".join(map(str, range(repeats))), *argv[first:]]


def job_repeats(cfg) -> list[int]:
    """The repeats this job runs: the one a multirun gave it, else all of ``measure.repeats``."""
    repeat = cfg.measure.repeat
    return [int(repeat)] if repeat is not None else list(range(int(cfg.measure.repeats)))


def run_repeats(cfg, out_dir: Path, run_once) -> int:
    """``run_once(cfg)`` for every repeat of this job (the worst exit status), each with ``cfg.measure.repeat`` set;
    from the second on, the rows already written are kept (resume, without retrying earlier repeats' failures).
    The repeats' loads and their order go into run.json (``repeats``)."""
    repeats = job_repeats(cfg)
    multirun_job = cfg.measure.repeat is not None
    loads, worst = [], 0
    for i, repeat in enumerate(repeats):
        this = cfg.with_measure(repeat=repeat)
        if i:
            this = dataclasses.replace(this, resume=True, retry_failed=False)
        started = time.time()
        worst = max(worst, run_once(this))
        loads.append(_load_record(out_dir, repeat, started))
        _record(out_dir, {
            "count": int(cfg.measure.repeats), "in_this_run": repeats, "loads": loads,
            "schedule": "interleaved: one repeat per job, the multirun's jobs in rounds of every configuration"
            if multirun_job else "one after another in this run (a single configuration)"})
    return worst


def _load_record(out_dir: Path, repeat: int, started: float) -> dict:
    info = _read(out_dir)
    isolation = info.get("isolation") or {}
    return {"repeat": repeat, "started": started, "load_seconds": info.get("load_seconds"),
            "worker_pids": isolation.get("worker_pids") if isinstance(isolation, dict) else None}


def _read(out_dir: Path) -> dict:
    from harness.record.runrecord import read_run

    record = read_run(out_dir)
    return record.to_dict() if record.readable else {}


def _record(out_dir: Path, repeats: dict) -> None:
    from harness.record.runrecord import read_run, update_run

    if read_run(out_dir).readable:  # a run that wrote no run.json gets none from here either
        update_run(out_dir, repeats=repeats)
