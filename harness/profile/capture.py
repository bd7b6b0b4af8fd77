"""One profiled phase (a prefill, or a few decode steps) of a loaded backend: what ran, per kernel, and where.

The profiler is the one that sees the backend's kernels: ``torch.profiler`` with CUPTI on CUDA, which records every
kernel of the process (HF's, Inductor's, a replayed CUDA graph's and ONNX Runtime's CUDA EP's alike); on the CPU the
operators' self time. Only device rows are summed on CUDA (kernels, copies, memsets): an operator row carries the
device time of the kernels it launched, so summing both would count them twice. A backend whose kernels torch's
profiler does not see (ONNX Runtime's CPU EP runs no torch operators) returns them from the optional
``profile_kernels`` hook, which runs the phase under its own profiler.

Where the profiled call marks its steps (:func:`step`, a ``record_function`` range), the kernel table and the busy
times count the work inside the marked steps, and the phase gets its :mod:`.timeline` split (busy, waiting before
each kernel, tail). User annotations (the step marks, a compiled region's range) are host ranges, never kernels or
operators: they are left out of every sum.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.measure.timing import synchronize
from harness.profile.categories import CATEGORIES
from harness.profile.timeline import STEP_MARK, Span, StepSplit, spans_in_steps, split_steps

# The dispatcher op that wraps whichever SDPA kernel runs: never the label, the op under it is.
_DISPATCHERS = ("aten::scaled_dot_product_attention",)


@dataclass
class KernelRow:
    """One kernel (or operator) name over the profiled calls: how often it ran and for how long in total."""

    name: str
    category: str
    calls: int
    us: float


@dataclass
class PhaseProfile:
    """A profiled phase: ``steps`` calls (1 for a prefill) and every kernel that ran in them."""

    phase: str  # prefill | decode
    steps: int
    source: str  # cupti | cpu-operators | backend
    rows: list[KernelRow] = field(default_factory=list)
    attention_kernel: str | None = None  # the attention kernel with the most time (the label of what ran)
    timeline: StepSplit | None = None  # busy, waiting and tail per step (harness/profile/timeline.py)
    timeline_note: str | None = None  # why there is no timeline split, when there is none

    @property
    def kernels_per_step(self) -> float:
        return sum(r.calls for r in self.rows) / self.steps

    @property
    def busy_ms_per_step(self) -> float:
        return sum(r.us for r in self.rows) / self.steps / 1e3

    def category_ms_per_step(self) -> dict[str, float]:
        totals = dict.fromkeys(CATEGORIES, 0.0)
        for r in self.rows:
            totals[r.category] += r.us / self.steps / 1e3
        return totals

    def table(self) -> list[dict]:
        """Per kernel, per step, longest first."""
        return [{"name": r.name, "category": r.category, "calls_per_step": r.calls / self.steps,
                 "us_per_step": r.us / self.steps}
                for r in sorted(self.rows, key=lambda r: -r.us)]


def profile_phase(phase: str, run: Callable[[], None], steps: int, device: str, handle,
                  category_of: Callable[[str], str], trace: Path | None) -> PhaseProfile:
    """Profile one call of ``run`` (``steps`` prefills or decode steps); with ``trace``, write a gzipped
    Chrome/Perfetto trace there."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        events = handle.profile_kernels(run=run, trace_path=str(raw))
        if events is not None:
            rows = _aggregate(((e["name"], 1, float(e["us"])) for e in events), category_of)
            result = PhaseProfile(phase, steps, "backend", rows, _top_attention(rows),
                                  timeline_note="the backend's own profiler gives kernel times, not a timeline on "
                                                "the harness's clock")
        else:
            result = _torch_profile(phase, run, steps, device, category_of, raw if trace else None)
        if trace is not None and raw.exists():
            with open(raw, "rb") as src, gzip.open(trace, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return result


def _torch_profile(phase: str, run, steps: int, device: str, category_of, raw: Path | None) -> PhaseProfile:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    on_cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    synchronize(device)
    with _kineto_notices_dropped(), profile(activities=activities) as prof:
        run()
        synchronize(device)
    if raw is not None:
        prof.export_chrome_trace(os.fspath(raw))
    timeline, in_steps = _timeline(prof.events(), on_cuda, category_of)
    events = prof.key_averages()
    if on_cuda:
        timed = [(e.key, e.count, float(e.self_device_time_total)) for e in events
                 if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
        rows = _aggregate(timed if in_steps is None else in_steps, category_of)
        return PhaseProfile(phase, steps, "cupti", rows, _top_attention(rows), *timeline)
    timed = [(e.key, e.count, float(e.self_cpu_time_total)) for e in events if not e.is_user_annotation]
    rows = _aggregate(timed if in_steps is None else in_steps, category_of)
    # on the CPU the attention op's own time hides under its children (bmm, softmax): label by inclusive time
    inclusive = [KernelRow(e.key, category_of(e.key), e.count, float(e.cpu_time_total)) for e in events
                 if e.key not in _DISPATCHERS and not e.is_user_annotation]
    return PhaseProfile(phase, steps, "cpu-operators", rows, _top_attention(inclusive), *timeline)


@contextlib.contextmanager
def step():
    """Mark one profiled step (a prefill and its first token, or a decode step and its token): the range
    harness/profile/timeline.py splits. Costs next to nothing when no profiler records."""
    from torch.profiler import record_function

    with record_function(STEP_MARK):
        yield


def _timeline(events, on_cuda: bool, category_of) -> tuple[tuple[StepSplit | None, str | None], list | None]:
    """((the phase's timeline split, or None and why), the (name, 1, µs) of every span in a marked step, or None
    without marks) from torch.profiler's events: kernels, memcpys and memsets on CUDA; on the CPU the operators of
    the thread that ran the steps, each top-level unless an operator called it."""
    from torch.autograd import DeviceType

    marks = [e for e in events if e.is_user_annotation and e.name == STEP_MARK and e.device_type == DeviceType.CPU]
    if not marks:
        return (None, "the profiled call marked no steps"), None
    spans = []
    for e in events:
        if e.is_user_annotation:
            continue
        if on_cuda and e.device_type == DeviceType.CUDA:
            spans.append(Span(e.name, category_of(e.name), e.time_range.start, e.time_range.end,
                              float(e.time_range.elapsed_us())))
        elif not on_cuda and e.device_type == DeviceType.CPU and e.thread == marks[0].thread:
            spans.append(Span(e.name, category_of(e.name), e.time_range.start, e.time_range.end,
                              float(e.self_cpu_time_total), _called_by_no_operator(e)))
    windows = [(m.time_range.start, m.time_range.end) for m in marks]
    mine = spans_in_steps(windows, spans)
    return (split_steps(windows, mine), None), [(s.name, 1, s.self_us) for s in mine]


def _called_by_no_operator(event) -> bool:
    """True when every range around the operator is a user annotation (a step mark, a compiled region)."""
    parent = event.cpu_parent
    while parent is not None:
        if not parent.is_user_annotation:
            return False
        parent = parent.cpu_parent
    return True


@contextlib.contextmanager
def _kineto_notices_dropped():
    """Drop the ``USDT: ... profiler_start/stop`` lines some torch builds' Kineto prints on fd 2 per profile (two
    per phase and cell would bury the progress output); anything else written meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith("USDT:")]
            if kept:
                sys.stderr.write("".join(kept))


def _aggregate(timed, category_of) -> list[KernelRow]:
    calls: dict[str, int] = defaultdict(int)
    us: dict[str, float] = defaultdict(float)
    for name, count, micros in timed:
        if micros > 0:
            calls[name] += count
            us[name] += micros
    return [KernelRow(name, category_of(name), calls[name], us[name]) for name in us]


def _top_attention(rows: list[KernelRow]) -> str | None:
    attention = [r for r in rows if r.category == "attention"]
    return max(attention, key=lambda r: r.us).name if attention else None
