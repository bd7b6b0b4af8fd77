"""How long slow, repeatable work took last time (an ONNX export, a torch.compile of the decode step), so that the
next run can say how long to expect before its first number.

One small JSON file in the artifact cache (``durations.json``) maps a work key (what is built, for which model and
settings, and whether caches were warm) to the seconds it took last; a file lock keeps concurrent runs from
losing each other's entries. :func:`slow_work` wraps the work: it prints a status line with the estimate when one
is known, and afterwards the time taken (and stores it). The file is a convenience: unreadable, it is ignored.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from harness import progress

FILE = "durations.json"


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def last_seconds(cache_dir: Path, key: str) -> float | None:
    """What the work called ``key`` took the last time it ran with this cache, or None."""
    value = _read(Path(cache_dir) / FILE).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def remember(cache_dir: Path, key: str, seconds: float) -> None:
    path = Path(cache_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        data = _read(path)
        data[key] = round(seconds, 2)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)


class Timed:
    """What :func:`slow_work` yields: ``seconds`` is set once the work is done."""

    def __init__(self, estimate: float | None):
        self.estimate = estimate
        self.seconds: float | None = None


@contextlib.contextmanager
def slow_work(cache_dir: Path, what: str, key: str) -> Iterator[Timed]:
    """Announce ``what`` with the time it took last time (``key`` in this cache), time it, remember it."""
    estimate = last_seconds(cache_dir, key)
    hint = f"last time {estimate:.0f} s" if estimate is not None else "no earlier time on record"
    progress.say(f"{what} ({hint}) ...")
    timed, t0 = Timed(estimate), time.perf_counter()
    yield timed
    timed.seconds = time.perf_counter() - t0
    progress.say(f"{what}: done in {timed.seconds:.1f} s")
    with contextlib.suppress(OSError):  # a read-only cache loses only the estimate
        remember(cache_dir, key, timed.seconds)
