"""One profiled phase (a prefill, or a few decode steps) of a loaded backend: what ran, per kernel, and where.

The profiler is the one that sees the backend's kernels: ``torch.profiler`` with CUPTI on CUDA, which records every
kernel of the process (HF's, Inductor's, a replayed CUDA graph's and ONNX Runtime's CUDA EP's alike); on the CPU the
operators' self time. Only device rows are summed on CUDA (kernels, copies, memsets): an operator row carries the
device time of the kernels it launched, so summing both would count them twice. A backend whose kernels torch's
profiler does not see (ONNX Runtime's CPU EP runs no torch operators) returns them from the optional
``profile_kernels`` hook, which runs the phase under its own profiler.
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
            result = PhaseProfile(phase, steps, "backend", rows, _top_attention(rows))
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
    events = prof.key_averages()
    if on_cuda:
        timed = [(e.key, e.count, float(e.self_device_time_total)) for e in events
                 if e.device_type == DeviceType.CUDA]
        rows = _aggregate(timed, category_of)
        return PhaseProfile(phase, steps, "cupti", rows, _top_attention(rows))
    rows = _aggregate(((e.key, e.count, float(e.self_cpu_time_total)) for e in events), category_of)
    # on the CPU the attention op's own time hides under its children (bmm, softmax): label by inclusive time
    inclusive = [KernelRow(e.key, category_of(e.key), e.count, float(e.cpu_time_total)) for e in events
                 if e.key not in _DISPATCHERS]
    return PhaseProfile(phase, steps, "cpu-operators", rows, _top_attention(inclusive))


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
