"""Progress on long work, on stderr: a bar over grid cells (with the iteration count of the cell in progress and an
estimate of the time left), a start and an end line for each long phase (load, export, compile, validation, the
overhead measurement) with an estimate from the last time the same phase ran, and status lines.

On a terminal the cell bar is tqdm's; when stderr is not a terminal (CI logs, ``| tee``) tqdm's carriage returns
would make one unreadable line, so each finished cell is a line of its own instead. The summary table at the end of
a job goes to stdout (:mod:`harness.record.summary`).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

_current: "CellBar | None" = None


def say(message: str) -> None:
    if _current is not None and _current.bar is not None:
        _current.bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def interactive() -> bool:
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- phases: load, export, compile, validation, overhead --------------------------------------------------------

def _durations_file() -> Path:
    """Where the last duration of each phase is kept: beside the artifact cache (an estimate, not a result)."""
    root = os.environ.get("ENGINEBENCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "enginebench")
    return Path(root) / "phase_seconds.json"


def _read_durations() -> dict[str, float]:
    try:
        return json.loads(_durations_file().read_text())
    except (OSError, ValueError):
        return {}


def _remember(key: str, seconds: float) -> None:
    path = _durations_file()
    try:
        known = _read_durations()
        known[key] = round(seconds, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=0, sort_keys=True))
        os.replace(tmp, path)  # a concurrent writer may win: the estimate is then theirs, which is as good
    except OSError:
        pass  # a read-only home: no estimate next time, nothing else lost


@contextlib.contextmanager
def phase(what: str, key: str | None = None, end: bool = True):
    """``with phase("onnxruntime: loading", key)``: a start line with the estimate (the duration of the same
    ``key`` last time, when known) and an end line with the time it took (``end``: the caller says it itself).
    Phases shorter than a second print only the start line."""
    last = _read_durations().get(key) if key else None
    say(f"{what} ..." + (f" (about {duration(last)}, as last time)" if last and last >= 2 else ""))
    t0 = time.perf_counter()
    yield
    seconds = time.perf_counter() - t0
    if key:
        _remember(key, seconds)
    if end and seconds >= 1:
        say(f"{what}: done in {duration(seconds)}")


# --- the cell loop ---------------------------------------------------------------------------------------------

class CellBar:
    """tqdm's bar on a terminal; one line per finished cell (with the time left) elsewhere."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.done, self.failed = total, label, 0, 0
        self.started = time.perf_counter()
        self.cell = label
        self.bar = tqdm(total=total, desc=label, unit="cell", file=sys.stderr, dynamic_ncols=True) \
            if interactive() else None

    def describe(self, text: str) -> None:
        self.cell = text
        if self.bar is not None:
            self.bar.set_description(text)

    def iteration(self, n: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"iter {n}" + (f", {self.failed} failed" if self.failed else ""))

    def advance(self, status: str) -> None:
        if status != "ok":
            self.failed += 1
            say(f"cell finished with status {status}")
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done)
        say(f"cell {self.done}/{self.total} {self.cell}: {status} ({duration(elapsed)} so far"
            + (f", about {duration(left)} left)" if self.done < self.total else ")"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def cells(total: int, label: str):
    global _current
    _current = CellBar(total, label)
    try:
        yield _current
    finally:
        _current.close()
        _current = None


def cell_progress(iteration: int) -> None:
    if _current is not None:
        _current.iteration(iteration)
