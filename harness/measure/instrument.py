"""The timing core, callable on its own: a backend's hooks, a prompt batch and a :class:`MeasurePolicy` in,
:class:`CellSamples` out. No Hydra, no Job, no files: the harness's cell loop (harness/run/cell.py) and every tool
that times something call this, so that every published number comes from one instrument.

    from harness.measure.instrument import MeasurePolicy, measure
    samples = measure(handle, ids, MeasurePolicy(new_tokens=64), device="cuda")

One timed iteration is what a serving loop does for one request: reset the KV cache, prefill, then per decode
step call the hook, take the greedy token to the host (where a server streams it and checks for the end) and feed
it back as the next step's input. Two clocks run side by side:

- the *sustained* time, as the host sees it: the interval between consecutive step starts (for the last step, to
  the moment its token is on the host), and for prefill from the call to the first token on the host. This is
  what a user waits for per token, and what ``decode_latency_ms`` / ``prefill_latency_ms`` report. Because the
  token is taken every step, the host can never run ahead of the GPU, so the number no longer depends on how long
  the prompt (or the previous step) gave the host to queue work.
- the *device* time of the hook call alone: CUDA events recorded around it on the current stream (read after the
  iteration, so the events themselves never wait), or on a CPU the call's own wall time. Where the GPU waits for
  the host's launches inside a step, that wait is in both clocks; what the device clock leaves out is the host's
  work between steps (sampling, the token's trip, the Python around the call).

A cell whose two medians differ by more than :data:`HOST_BOUND_FRACTION` is host-bound (:func:`host_bound_phases`).

Iterations: ``warmup`` discarded, then repeated until both ``min_iters`` and ``min_seconds`` are met and, with
``target_rel_ci``, until every latency's median is known within ± that fraction (95 % bootstrap interval; checked
as the count grows by a quarter) or ``max_seconds`` has passed.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import numpy as np

from harness.measure import metrics
from harness.measure.sample_units import widest_relative_ci
from harness.measure.timing import StepTimer, synchronize

HOST_BOUND_FRACTION = 0.10  # sustained median more than 10 % above the device median: the host sets the pace


@dataclass(frozen=True)
class MeasurePolicy:
    """How long to measure one cell (the ``measure.*`` config options, without Hydra)."""

    new_tokens: int
    warmup: int = 2
    min_iters: int = 5
    max_iters: int = 1_000_000
    min_seconds: float = 0.0
    max_seconds: float = math.inf
    target_rel_ci: float | None = None

    @classmethod
    def from_config(cls, measure, new_tokens: int) -> "MeasurePolicy":
        """From the ``measure`` config node (any object with those attributes)."""
        return cls(new_tokens=new_tokens, warmup=measure.warmup, min_iters=measure.min_iters,
                   max_iters=measure.max_iters, min_seconds=measure.min_seconds, max_seconds=measure.max_seconds,
                   target_rel_ci=measure.target_rel_ci)


@dataclass
class CellSamples:
    """The raw timings of one cell's timed iterations (ms)."""

    prefill_ms: list[float] = field(default_factory=list)  # sustained: call to first token on the host
    decode_ms: list[float] = field(default_factory=list)  # sustained: step start to next step start
    e2e_ms: list[float] = field(default_factory=list)  # sustained: prefill call to last token on the host
    prefill_device_ms: list[float] = field(default_factory=list)  # the prefill call on the device clock
    decode_device_ms: list[float] = field(default_factory=list)  # each decode call on the device clock
    energy_j: float | None = None  # GPU energy over the timed iterations (None without NVML's counter)
    rel_ci: float | None = None  # with target_rel_ci: the widest relative half-width reached
    ci_target_met: bool | None = None  # with target_rel_ci: whether it was reached before max_seconds/max_iters

    def per_iteration(self, values: list[float], new_tokens: int) -> list[list[float]]:
        """A decode series as [iterations, new_tokens]."""
        return [values[i:i + new_tokens] for i in range(0, len(values), new_tokens)]

    def decode_per_iteration(self, new_tokens: int) -> list[list[float]]:
        return self.per_iteration(self.decode_ms, new_tokens)

    @property
    def iterations(self) -> int:
        return len(self.e2e_ms)


def take_token(logits, device: str):
    """What a serving loop does between steps: the greedy token to the host, and back as the next input."""
    host = logits.argmax(-1, keepdim=True).cpu()  # [B, 1]; the copy waits for the step: the token now exists
    return host, host.to(device)


def time_iteration(hooks, input_ids, new_tokens: int, device: str, timer: StepTimer) -> dict[str, list[float]]:
    """One timed iteration (see the module docstring); returns its sustained and device series."""
    hooks.reset_kv()
    synchronize(device)
    timer.start()
    t0 = time.perf_counter()
    m0 = timer.mark()
    logits = hooks.prefill(input_ids=input_ids, prompt_lens=None)  # [B, V]
    m1 = timer.mark()
    _, tok = take_token(logits, device)
    starts, marks = [time.perf_counter()], []
    for _ in range(new_tokens):
        a = timer.mark()
        logits = hooks.decode_step(tokens=tok)
        marks.append((a, timer.mark()))
        _, tok = take_token(logits, device)
        starts.append(time.perf_counter())  # this step's end is the next step's start
    timer.finish()
    return {"prefill_ms": [(starts[0] - t0) * 1e3],
            "decode_ms": [(b - a) * 1e3 for a, b in zip(starts, starts[1:])],
            "e2e_ms": [(starts[-1] - t0) * 1e3],
            # the device series are named after their metrics (and are Samples' fields of that name)
            metrics.PREFILL_DEVICE: [timer.elapsed_ms(m0, m1)],
            metrics.DECODE_DEVICE: [timer.elapsed_ms(a, b) for a, b in marks]}


def warm_up(hooks, input_ids, policy: MeasurePolicy, device: str) -> None:
    """The discarded iterations (compilation, graph capture, allocator growth happen here)."""
    timer = StepTimer(device)
    for _ in range(policy.warmup):
        time_iteration(hooks, input_ids, policy.new_tokens, device, timer)


def time_iterations(hooks, input_ids, policy: MeasurePolicy, device: str,
                    on_iteration: Callable[[int], None] | None = None,
                    on_note: Callable[[str], None] | None = None) -> CellSamples:
    """The timed iterations of one cell, after :func:`warm_up`; ``on_iteration(n)`` after each one."""
    timer = StepTimer(device)
    samples = CellSamples()
    started, next_check, ci_at, n, elapsed = time.perf_counter(), 0, None, 0, 0.0

    def rel_ci() -> float:
        return widest_relative_ci(samples.prefill_ms, samples.decode_per_iteration(policy.new_tokens),
                                  samples.e2e_ms)

    while True:
        for key, values in time_iteration(hooks, input_ids, policy.new_tokens, device, timer).items():
            getattr(samples, key).extend(values)
        n, elapsed = samples.iterations, time.perf_counter() - started
        if on_iteration is not None:
            on_iteration(n)
        if n >= policy.max_iters:
            break
        if n < policy.min_iters or elapsed < policy.min_seconds:
            continue
        if policy.target_rel_ci is None:
            break
        if n >= next_check:
            samples.rel_ci, ci_at = rel_ci(), n
            if samples.rel_ci <= policy.target_rel_ci:
                break
            next_check = n + max(1, n // 4)
        if elapsed >= policy.max_seconds:
            break
    if policy.target_rel_ci is not None:
        if ci_at != samples.iterations:  # samples came in after the last check (or none was made)
            samples.rel_ci = rel_ci()
        samples.ci_target_met = samples.rel_ci <= policy.target_rel_ci
        if not samples.ci_target_met and on_note is not None:
            on_note(f"interval target ±{policy.target_rel_ci:.1%} not reached in {n} iterations / "
                    f"{elapsed:.1f} s (±{samples.rel_ci:.1%})")
    return samples


def measure(hooks, input_ids, policy: MeasurePolicy, device: str, warmup_hooks=None) -> CellSamples:
    """Warm up (through ``warmup_hooks`` when given, e.g. checked hooks), then time: the whole instrument."""
    warm_up(warmup_hooks or hooks, input_ids, policy, device)
    return time_iterations(hooks, input_ids, policy, device)


def time_calls(fn: Callable[[], object], calls: int, device: str,
               around_calls: Callable[[], ContextManager] = nullcontext) -> dict[str, float]:
    """Mean ms per call of ``fn`` issued back to back, the way a decode loop issues per-step work (e.g. a
    sampler): device time between events around all calls, and the host's time until the last call finished.
    ``around_calls()`` is entered around the calls only, not the synchronisations (e.g. a sync debug mode)."""
    timer = StepTimer(device)
    synchronize(device)
    timer.start()
    t0 = time.perf_counter()
    a = timer.mark()
    with around_calls():
        for _ in range(calls):
            fn()
    b = timer.mark()
    timer.finish()
    wall_ms = (time.perf_counter() - t0) * 1e3
    return {"device_ms_per_call": timer.elapsed_ms(a, b) / calls, "sustained_ms_per_call": wall_ms / calls}


def host_bound_phases(samples: CellSamples) -> list[str]:
    """The phases ("prefill", "decode") whose sustained median exceeds the device median by more than
    :data:`HOST_BOUND_FRACTION`: there the host, not the device, sets the time a user waits."""
    phases = []
    for phase, sustained, device in (("prefill", samples.prefill_ms, samples.prefill_device_ms),
                                     ("decode", samples.decode_ms, samples.decode_device_ms)):
        if sustained and device:
            s, d = float(np.median(sustained)), float(np.median(device))
            if d > 0 and s > d * (1 + HOST_BOUND_FRACTION):
                phases.append(phase)
    return phases
