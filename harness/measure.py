"""The measurement of one cell: timed iterations (:func:`time_cell` → :class:`CellSamples`), the metrics derived
from them (:func:`cell_metrics`), and the harness's own per-step overhead (:func:`measure_overhead`).

Each iteration: reset KV, prefill, ``new_tokens`` decode steps feeding back the greedy token (argmax on the device,
outside the timed hook calls). ``warmup`` iterations are discarded, then iterations repeat until both
``min_iters`` and ``min_seconds`` are met and, with ``measure.target_rel_ci``, until every latency's median is known
within ± that fraction (95 % bootstrap interval; checked as the count grows by a quarter, so the check costs little)
or ``max_seconds`` has passed — the stability window of a load generator. Marks are CUDA events on GPU (no host sync
inside the timed region). Every sample is returned; harness/samples.py keeps them on disk.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from harness import metrics as m
from harness import progress
from harness.inputs import random_prompt_ids
from harness.memory import MemoryPeaks, energy_mj, nvml_handle
from harness.plan import Job
from harness.roofline import decode_bytes_per_step, prefill_flops
from harness.samples import widest_relative_ci
from harness.stats import summarize, summarize_steps
from harness.timing import StepTimer, synchronize


@dataclass
class CellSamples:
    """The raw timings of one cell's timed iterations."""

    prefill_ms: list[float]  # one per iteration
    decode_ms: list[float]  # one per decode step of every iteration
    e2e_ms: list[float]  # one per iteration: prefill + every decode step
    energy_j: float | None  # GPU energy over the timed iterations (None without NVML's counter)
    rel_ci: float | None = None  # with target_rel_ci: the widest relative half-width reached
    ci_target_met: bool | None = None  # with target_rel_ci: whether it was reached before max_seconds/max_iters

    def decode_per_iteration(self, new_tokens: int) -> list[list[float]]:
        """decode_ms as [iterations, new_tokens]."""
        return [self.decode_ms[i:i + new_tokens] for i in range(0, len(self.decode_ms), new_tokens)]

    @property
    def iterations(self) -> int:
        return len(self.e2e_ms)


def time_cell(job: Job, handle, batch: int, prompt_len: int) -> CellSamples:
    """Timed iterations of one cell."""
    cfg = job.cfg
    ids = random_prompt_ids(job.hf_config, batch, prompt_len, cfg.seed).to(job.device)  # [B, P]
    timer = StepTimer(job.device)

    def iteration(hooks):
        hooks.reset_kv()
        synchronize(job.device)
        timer.start()
        m0 = timer.mark()
        logits = hooks.prefill(input_ids=ids, prompt_lens=None)  # [B, V]
        m1 = timer.mark()
        steps = []
        for _ in range(cfg.grid.new_tokens):
            tok = logits.argmax(-1, keepdim=True)  # [B, 1] greedy feedback on the device, outside the timed call
            a = timer.mark()
            logits = hooks.decode_step(tokens=tok)
            steps.append((a, timer.mark()))
        timer.finish()
        return m0, m1, steps

    checked = handle.checked(job.hf_config.vocab_size, job.device)  # warm-up only: the checks sync the host
    for _ in range(cfg.measure.warmup):
        iteration(checked)
    nv = nvml_handle(job.device)
    energy_start, started = energy_mj(nv), time.perf_counter()
    samples = CellSamples([], [], [], None)
    measure, next_check, ci_at = cfg.measure, 0, None

    def rel_ci() -> float:
        return widest_relative_ci(samples.prefill_ms, samples.decode_per_iteration(cfg.grid.new_tokens),
                                  samples.e2e_ms)

    while True:
        m0, m1, steps = iteration(handle)
        samples.prefill_ms.append(timer.elapsed_ms(m0, m1))
        samples.decode_ms.extend(timer.elapsed_ms(a, b) for a, b in steps)
        samples.e2e_ms.append(timer.elapsed_ms(m0, steps[-1][1]))
        n, elapsed = samples.iterations, time.perf_counter() - started
        progress.cell_progress(n)
        if n >= measure.max_iters:
            break
        if n < measure.min_iters or elapsed < measure.min_seconds:
            continue
        if measure.target_rel_ci is None:
            break
        if n >= next_check:
            samples.rel_ci, ci_at = rel_ci(), n
            if samples.rel_ci <= measure.target_rel_ci:
                break
            next_check = n + max(1, n // 4)
        if elapsed >= measure.max_seconds:
            break
    if measure.target_rel_ci is not None:
        if ci_at != samples.iterations:  # samples came in after the last check (or none was made)
            samples.rel_ci = rel_ci()
        samples.ci_target_met = samples.rel_ci <= measure.target_rel_ci
        if not samples.ci_target_met:
            progress.say(f"b={batch} p={prompt_len}: interval target ±{measure.target_rel_ci:.1%} not reached in "
                         f"{n} iterations / {elapsed:.1f} s (±{samples.rel_ci:.1%})")
    energy_end = energy_mj(nv)
    if energy_start is not None and energy_end is not None:
        samples.energy_j = (energy_end - energy_start) / 1e3
    return samples


def cell_metrics(job: Job, batch: int, prompt_len: int, samples: CellSamples, peaks: MemoryPeaks,
                 peak_bw: float) -> list[tuple]:
    """(metric, unit, statistics) for every metric of the cell; memory and energy only where measured."""
    n, cfg = job.cfg.grid.new_tokens, job.hf_config
    ctx = prompt_len + n / 2  # mean KV fill over the decode steps
    nbytes = decode_bytes_per_step(cfg, batch, ctx, torch.finfo(job.dtype).bits // 8, job.quant)
    flops = prefill_flops(cfg, batch, prompt_len)
    prefill_ms, decode_ms, e2e_ms = samples.prefill_ms, samples.decode_ms, samples.e2e_ms
    values = {
        m.PREFILL_LATENCY: prefill_ms,
        m.DECODE_LATENCY: decode_ms,
        m.E2E_LATENCY: e2e_ms,
        m.PREFILL_THROUGHPUT: [batch * prompt_len / (t / 1e3) for t in prefill_ms],
        m.DECODE_THROUGHPUT: [batch / (t / 1e3) for t in decode_ms],
        m.E2E_THROUGHPUT: [batch * n / (t / 1e3) for t in e2e_ms],
        m.DECODE_BANDWIDTH: [nbytes / (t / 1e3) / 1e9 for t in decode_ms],
        m.DECODE_BANDWIDTH_FRAC: [nbytes / (t / 1e3) / peak_bw for t in decode_ms],
        m.PREFILL_TFLOPS: [flops / (t / 1e3) / 1e12 for t in prefill_ms],
    }
    for name in m.MEMORY:
        value = getattr(peaks, name)
        if value is not None:
            values[name] = [value]
    if samples.energy_j is not None:
        values[m.ENERGY_PER_TOKEN] = [samples.energy_j / (batch * n * samples.iterations)]
    # the median's bootstrap interval where it is compared (latencies); a throughput's follows from its latency's.
    # Decode latency over its independent units, one per iteration (harness/stats.py: summarize_steps).
    decode = summarize_steps(samples.decode_per_iteration(n))
    return [(name, m.UNITS[name], decode if name == m.DECODE_LATENCY else summarize(v, ci=name in m.LATENCIES))
            for name, v in values.items()]


def measure_overhead(job: Job, handle, batch: int, steps: int) -> dict[str, float]:
    """Harness cost per decode step: the timed hook loop vs the backend's own function called directly."""
    direct = handle.direct_decode_step()
    timer = StepTimer(job.device)
    ids = random_prompt_ids(job.hf_config, batch, 8, job.cfg.seed).to(job.device)
    steps = min(steps, job.cfg.grid.new_tokens + max(job.cfg.grid.prompt_lens) - 8)

    def via_harness():
        handle.reset_kv()
        tok = handle.prefill(input_ids=ids, prompt_lens=None).argmax(-1, keepdim=True)
        synchronize(job.device)
        t0 = time.perf_counter()
        timer.start()
        for _ in range(steps):
            timer.mark()
            logits = handle.decode_step(tokens=tok)
            timer.mark()
            tok = logits.argmax(-1, keepdim=True)
        synchronize(job.device)
        return (time.perf_counter() - t0) / steps

    def via_backend():
        handle.reset_kv()
        tok = handle.prefill(input_ids=ids, prompt_lens=None).argmax(-1, keepdim=True)
        synchronize(job.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            tok = direct(tokens=tok).argmax(-1, keepdim=True)
        synchronize(job.device)
        return (time.perf_counter() - t0) / steps

    via_harness(), via_backend()  # warm-up (compilation, graphs)
    harness_s, backend_s = [], []
    for _ in range(5):  # interleaved so that drift hits both alike
        harness_s.append(via_harness())
        backend_s.append(via_backend())
    h, b = sorted(harness_s)[2], sorted(backend_s)[2]
    return {"harness_step_ms": h * 1e3, "direct_step_ms": b * 1e3, "harness_overhead_us": (h - b) * 1e6,
            "harness_overhead_frac": (h - b) / b if b > 0 else math.nan}
