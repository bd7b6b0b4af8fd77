"""The measurement of one cell: timed iterations (:func:`time_cell` → :class:`CellSamples`), the metrics derived
from them (:func:`cell_metrics`), and the harness's own per-step overhead (:func:`measure_overhead`).

The iterations themselves are the timing core's (harness/measure/instrument.py: a serving loop that takes every token to
the host, timed on two clocks, sustained and device); this module adds what a job knows: its inputs, its policy
from ``measure.*``, progress, energy over the timed iterations and the metrics of results.csv. Every sample is
returned; harness/record/samples.py keeps them on disk.
"""
from __future__ import annotations

import math
import time

import torch

from harness import progress
from harness.accuracy.inputs import random_prompt_ids
from harness.measure import metrics as m
from harness.measure.instrument import CellSamples, MeasurePolicy, time_iterations, warm_up
from harness.measure.memory import MemoryPeaks, energy_mj, nvml_handle
from harness.measure.roofline import decode_bytes_read, prefill_flops
from harness.measure.stats import summarize, summarize_steps
from harness.measure.timing import StepTimer, synchronize
from harness.run.plan import Job


def time_cell(job: Job, handle, batch: int, prompt_len: int) -> CellSamples:
    """Timed iterations of one cell, through the timing core (harness/measure/instrument.py)."""
    cfg = job.cfg
    ids = random_prompt_ids(job.hf_config, batch, prompt_len, cfg.seed).to(job.device)  # [B, P]
    policy = MeasurePolicy.from_config(cfg.measure, cfg.grid.new_tokens)
    checked = handle.checked(job.hf_config.vocab_size, job.device)  # warm-up only: the checks sync the host
    warm_up(checked, ids, policy, job.device)
    nv = nvml_handle(job.device)
    energy_start = energy_mj(nv)
    samples = time_iterations(handle, ids, policy, job.device, on_iteration=progress.cell_progress,
                              on_note=lambda note: progress.say(f"b={batch} p={prompt_len}: {note}"))
    energy_end = energy_mj(nv)
    if energy_start is not None and energy_end is not None:
        samples.energy_j = (energy_end - energy_start) / 1e3
    return samples


def cell_metrics(job: Job, batch: int, prompt_len: int, samples: CellSamples, peaks: MemoryPeaks,
                 peak_bw: float) -> list[tuple]:
    """(metric, unit, statistics) for every metric of the cell; memory and energy only where measured."""
    n, cfg = job.cfg.grid.new_tokens, job.hf_config
    nbytes = decode_bytes_read(cfg, batch, prompt_len, n, torch.finfo(job.dtype).bits // 8, job.quant, job.info,
                               default_slots=max(job.cfg.grid.prompt_lens) + n)
    flops = prefill_flops(cfg, batch, prompt_len)
    prefill_ms, decode_ms, e2e_ms = samples.prefill_ms, samples.decode_ms, samples.e2e_ms
    device_ms = samples.decode_device_ms  # the roofline is the device's: its time, not the host's around it
    values = {
        m.PREFILL_LATENCY: prefill_ms,
        m.DECODE_LATENCY: decode_ms,
        m.E2E_LATENCY: e2e_ms,
        m.PREFILL_DEVICE: samples.prefill_device_ms,
        m.DECODE_DEVICE: device_ms,
        m.PREFILL_THROUGHPUT: [batch * prompt_len / (t / 1e3) for t in prefill_ms],
        m.DECODE_THROUGHPUT: [batch / (t / 1e3) for t in decode_ms],
        m.E2E_THROUGHPUT: [batch * n / (t / 1e3) for t in e2e_ms],
        m.DECODE_BANDWIDTH: [nbytes / (t / 1e3) / 1e9 for t in device_ms],
        m.DECODE_BANDWIDTH_FRAC: [nbytes / (t / 1e3) / peak_bw for t in device_ms],
        m.PREFILL_TFLOPS: [flops / (t / 1e3) / 1e12 for t in samples.prefill_device_ms],
    }
    for name in m.MEMORY:
        value = getattr(peaks, name)
        if value is not None:
            values[name] = [value]
    if samples.energy_j is not None:
        values[m.ENERGY_PER_TOKEN] = [samples.energy_j / (batch * n * samples.iterations)]
    # the median's bootstrap interval where it is compared (latencies); a throughput's follows from its latency's.
    # Decode latencies over their independent units, one per iteration (harness/measure/stats.py: summarize_steps).
    per_iteration = {m.DECODE_LATENCY: samples.decode_per_iteration(n),
                     m.DECODE_DEVICE: samples.per_iteration(samples.decode_device_ms, n)}
    return [(name, m.UNITS[name], summarize_steps(per_iteration[name]) if name in per_iteration
             else summarize(v, ci=name in m.LATENCIES)) for name, v in values.items() if v]


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
