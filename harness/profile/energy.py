"""Energy per phase: joules per prefill token and per decode token from NVML's total-energy counter.

The counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded) is refreshed by the
driver at its own interval, not at every call, so a phase shorter than that interval cannot be read around on its
own. :func:`counter_update_interval_s` measures the interval once per process (the time between the counter's
changes while polling it); each phase is then summed over enough repetitions to last ``WINDOW_INTERVALS`` such
intervals:

- prefill: after the cell's timed iterations, ``reset_kv`` + prefill repeated until the window is filled, read
  around the whole loop (synchronised before each read), divided by the repetitions;
- decode: the timed iterations' energy (read around them by harness/run/cell.py) minus one prefill's energy per
  iteration, divided by the decode tokens of the timed iterations. The timed window lasts at least
  ``measure.min_seconds``, so it spans many counter updates.

Without NVML or its energy counter (a CPU, an old GPU) the metrics are absent, never zero.
"""
from __future__ import annotations

import math
import statistics
import time

from harness.accuracy.inputs import random_prompt_ids
from harness.measure.memory import energy_mj, nvml_handle
from harness.measure.timing import synchronize

ENERGY_PREFILL = "energy_prefill_j_per_token"
ENERGY_DECODE = "energy_decode_j_per_token"
ENERGY_COUNTER_UPDATE = "energy_counter_update_ms"
UNITS = {ENERGY_PREFILL: "J/token", ENERGY_DECODE: "J/token", ENERGY_COUNTER_UPDATE: "ms"}
WINDOW_INTERVALS = 10  # a phase's window spans this many counter updates: the read error is <= 1/10 of it
MAX_REPEATS = 10_000

_measured: dict[int, float | None] = {}


def counter_update_interval_s(nv, poll_for_s: float = 2.0) -> float | None:
    """The median time between changes of the energy counter while polling it for up to ``poll_for_s`` (cached per
    handle); None when it did not change at least three times."""
    key = id(nv)
    if key not in _measured:
        changes, last, end = [], energy_mj(nv), time.perf_counter() + poll_for_s
        while time.perf_counter() < end and len(changes) < 12:
            value = energy_mj(nv)
            if value != last:
                changes.append(time.perf_counter())
                last = value
            time.sleep(0.0005)
        gaps = [b - a for a, b in zip(changes, changes[1:])]
        _measured[key] = statistics.median(gaps) if len(gaps) >= 2 else None
    return _measured[key]


def phase_energy(job, handle, batch: int, prompt_len: int, samples) -> dict[str, float]:
    """{metric: value} of the cell's energy per prefill and per decode token; {} without the energy counter."""
    nv = nvml_handle(job.device)
    if nv is None or samples.energy_j is None or energy_mj(nv) is None:
        return {}
    interval = counter_update_interval_s(nv)
    if interval is None:
        return {}
    prefill_s = statistics.median(samples.prefill_ms) / 1e3
    repeats = min(MAX_REPEATS, max(1, math.ceil(WINDOW_INTERVALS * interval / max(prefill_s, 1e-6))))
    ids = random_prompt_ids(job.hf_config, batch, prompt_len, job.cfg.seed).to(job.device)
    synchronize(job.device)
    start = energy_mj(nv)
    for _ in range(repeats):
        handle.reset_kv()
        handle.prefill(input_ids=ids, prompt_lens=None)
    synchronize(job.device)
    prefill_j = (energy_mj(nv) - start) / 1e3 / repeats
    decode_j = samples.energy_j - prefill_j * samples.iterations
    decode_tokens = batch * job.cfg.grid.new_tokens * samples.iterations
    return {ENERGY_PREFILL: prefill_j / (batch * prompt_len), ENERGY_DECODE: decode_j / decode_tokens,
            ENERGY_COUNTER_UPDATE: interval * 1e3}
