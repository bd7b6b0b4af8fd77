"""Where a profiled step's idle time goes: the timeline walk that charges each idle interval to the kernel after it.

A step's busy time (its kernels' durations, by category) leaves out the time in which the device does nothing:
the launch latency and host work before a kernel starts. This module splits a step's whole wall time instead:

- a step is the interval between two step marks (``STEP_MARK``, put around each profiled step by
  harness/profile/cell.py): from one step's start to the next one's start, and for the last step to its mark's end,
  as the timed loop measures a step (harness/measure/instrument.py);
- the work of a step is every span that starts inside it; the *top-level* spans (every kernel on a device; on the
  CPU the operators that no other operator called) are walked in start order, and the idle interval before each
  one (from the previous top-level span's end, or from the step's start) is charged to that span's category as
  *waiting*;
- the interval from the last top-level span's end to the step's end is the step's *tail* (the host's work after
  the last kernel, the token's trip, the loop around the step);
- *busy* is the sum of the spans' own time by category (a kernel's duration; an operator's self time).

So per step ``sum(busy) + sum(waiting) + tail - overlap == wall``, where ``overlap`` is the time counted twice:
kernels that run at once on two streams (0 on one stream, and for the operators of one CPU thread, whose self times
partition their top-level calls). The waiting before a kernel is not caused by that kernel: it is the time the
device spent waiting for the host to launch it, so it tells which part of the step the host held up, not why.

Pure functions over :class:`Span` lists; harness/profile/capture.py builds them from torch.profiler's events.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.profile.categories import CATEGORIES

STEP_MARK = "enginebench::step"  # the record_function range around one profiled step


@dataclass(frozen=True)
class Span:
    """One kernel or operator execution on the profile's clock (microseconds)."""

    name: str
    category: str
    start_us: float
    end_us: float
    self_us: float  # a kernel's duration; an operator's time outside the operators it called
    top_level: bool = True  # walked for the waiting time (kernels always; an operator that no operator called)


@dataclass
class StepSplit:
    """A step's wall time split into busy and waiting time per category, the tail and the overlap (ms; a mean per
    step when it covers several)."""

    wall_ms: float
    busy_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0.0))
    wait_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0.0))
    tail_ms: float = 0.0
    overlap_ms: float = 0.0
    steps: int = 1

    def as_dict(self) -> dict:
        return {"steps": self.steps, "wall_ms_per_step": self.wall_ms, "busy_ms_per_step": self.busy_ms,
                "wait_ms_per_step": self.wait_ms, "tail_ms_per_step": self.tail_ms,
                "overlap_ms_per_step": self.overlap_ms}


def step_windows(marks: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The steps' (start, end) from their marks' (start, end): each step ends where the next one starts (the loop
    between two steps belongs to the earlier one, as in the timed loop), the last one at its mark's end."""
    marks = sorted(marks)
    return [(start, marks[i + 1][0] if i + 1 < len(marks) else end) for i, (start, end) in enumerate(marks)]


def spans_in(window: tuple[float, float], spans: list[Span], last: bool) -> list[Span]:
    """The spans that start inside ``window`` (the last window includes its end)."""
    start, end = window
    return [s for s in spans if start <= s.start_us and (s.start_us < end or (last and s.start_us == end))]


def split_step(window: tuple[float, float], spans: list[Span]) -> StepSplit:
    """One step's wall time split by the walk in the module docstring; ``spans`` are the step's own."""
    start, end = window
    split = StepSplit(wall_ms=(end - start) / 1e3)
    cursor = start  # where the device (or the host thread) last became idle
    for span in sorted((s for s in spans if s.top_level), key=lambda s: (s.start_us, -s.end_us)):
        split.wait_ms[span.category] += max(0.0, span.start_us - cursor) / 1e3
        cursor = max(cursor, span.end_us)
    for span in spans:
        split.busy_ms[span.category] += span.self_us / 1e3
    split.tail_ms = (end - cursor) / 1e3  # negative if a kernel ran past the step's end
    overlap = sum(split.busy_ms.values()) + sum(split.wait_ms.values()) + split.tail_ms - split.wall_ms
    split.overlap_ms = round(overlap, 6)  # to the nanosecond: the profile's clock; below that it is float noise
    return split


def split_steps(marks: list[tuple[float, float]], spans: list[Span]) -> StepSplit | None:
    """The mean per step of :func:`split_step` over every marked step; None without marks."""
    windows = step_windows(marks)
    if not windows:
        return None
    splits = [split_step(w, spans_in(w, spans, last=i == len(windows) - 1)) for i, w in enumerate(windows)]
    n = len(splits)
    return StepSplit(
        wall_ms=sum(s.wall_ms for s in splits) / n,
        busy_ms={c: sum(s.busy_ms[c] for s in splits) / n for c in CATEGORIES},
        wait_ms={c: sum(s.wait_ms[c] for s in splits) / n for c in CATEGORIES},
        tail_ms=sum(s.tail_ms for s in splits) / n, overlap_ms=sum(s.overlap_ms for s in splits) / n, steps=n)


def spans_in_steps(marks: list[tuple[float, float]], spans: list[Span]) -> list[Span]:
    """The spans that start in some marked step (work before the first or after the last step is no step's)."""
    windows = step_windows(marks)
    return [s for i, w in enumerate(windows) for s in spans_in(w, spans, last=i == len(windows) - 1)]

