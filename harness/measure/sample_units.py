"""The units of comparison of one cell's samples, and how well its medians are known while it is being timed.

A two-sample test needs independent samples (harness/measure/stats.py): prefill and e2e give one per iteration;
decode gives the median step time of each iteration, since the steps of one iteration share its machine state.
The arrays are those a cell's samples file keeps (harness/record/samples.py): ``prefill_ms``, ``decode_ms``
[iterations, new_tokens], ``e2e_ms`` and the device-clock series named after their metrics.

``measure.target_rel_ci`` times a cell until :func:`widest_relative_ci` is within the target, so the timing core
(harness/measure/instrument.py) uses this module while it runs, and the report (harness/report/repeats.py) when it
compares runs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.measure import metrics
from harness.measure.stats import relative_ci_half_width

COMPARABLE = (metrics.PREFILL_LATENCY, metrics.DECODE_LATENCY, metrics.E2E_LATENCY)  # what target_rel_ci waits on
# the samples file names its device-clock series after their metrics
DEVICE_SERIES = {name: name for name in (metrics.PREFILL_DEVICE, metrics.DECODE_DEVICE)}


def comparison_units(samples: dict[str, Any], metric: str) -> np.ndarray:
    """The independent samples of ``metric`` that a two-sample test may use (see the module docstring)."""
    if metric == metrics.PREFILL_LATENCY:
        return samples["prefill_ms"]
    if metric == metrics.E2E_LATENCY:
        return samples["e2e_ms"]
    if metric == metrics.PREFILL_DEVICE and DEVICE_SERIES[metric] in samples:
        return samples[DEVICE_SERIES[metric]]
    if metric in (metrics.DECODE_LATENCY, metrics.DECODE_DEVICE):
        decode = samples["decode_ms" if metric == metrics.DECODE_LATENCY else DEVICE_SERIES[metric]]
        return np.median(decode, axis=1) if decode.ndim == 2 and decode.size else decode.ravel()
    raise KeyError(f"no kept samples for metric {metric}")


def widest_relative_ci(prefill_ms, decode_ms, e2e_ms) -> float:
    """The widest relative half-width (0.02 = ±2 %) of the medians' intervals over the comparison units of every
    kept latency: what ``measure.target_rel_ci`` waits on."""
    samples = {"prefill_ms": np.asarray(prefill_ms, dtype=np.float64),
               "decode_ms": np.asarray(decode_ms, dtype=np.float64), "e2e_ms": np.asarray(e2e_ms, dtype=np.float64)}
    return max(relative_ci_half_width(comparison_units(samples, metric)) for metric in COMPARABLE)
