"""Summary statistics of latency samples (pure functions)."""
from __future__ import annotations

import math

import numpy as np

STAT_NAMES = ("mean", "p10", "p50", "p90", "p99", "std", "min", "max", "n")


def summarize(samples) -> dict[str, float]:
    """mean, p10/p50/p90/p99 (linear interpolation), sample std (ddof=1), min, max and n of a 1-D sample."""
    x = np.asarray(list(samples), dtype=np.float64)
    if x.size == 0:
        return {k: math.nan for k in STAT_NAMES} | {"n": 0}
    p10, p50, p90, p99 = np.percentile(x, [10, 50, 90, 99])
    return {
        "mean": float(x.mean()), "p10": float(p10), "p50": float(p50), "p90": float(p90), "p99": float(p99),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()), "max": float(x.max()), "n": int(x.size),
    }
