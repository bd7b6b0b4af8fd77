"""``enginebench-report compare OLD NEW``: cells whose latency moved beyond noise between two result sets.

A cell moved when its p10-p90 ranges in OLD and NEW do not overlap and the medians differ by more than
``--threshold`` (relative). Slower = regression. ``--fail-on-regression`` makes the exit code 1 for CI gates.
"""
from __future__ import annotations

import pandas as pd

from harness.report.comparison import CELL

METRICS = ("decode_latency_ms", "prefill_latency_ms", "e2e_latency_ms")


def compare_runs(old: pd.DataFrame, new: pd.DataFrame, threshold: float = 0.05) -> pd.DataFrame:
    keys = CELL + ["backend", "metric"]
    pick = ["p10", "p50", "p90"]
    a = old[old.metric.isin(METRICS)].drop_duplicates(keys, keep="last")[keys + pick]
    b = new[new.metric.isin(METRICS)].drop_duplicates(keys, keep="last")[keys + pick]
    m = a.merge(b, on=keys, how="outer", suffixes=("_old", "_new"), indicator=True)
    m["change"] = m.p50_new / m.p50_old - 1.0
    apart = (m.p10_new > m.p90_old) | (m.p90_new < m.p10_old)
    verdict = pd.Series("unchanged", index=m.index, dtype=object)
    verdict[apart & (m.change > threshold)] = "regression"
    verdict[apart & (m.change < -threshold)] = "improvement"
    verdict[~apart | (m.change.abs() <= threshold)] = "within noise"
    verdict[m["_merge"] == "left_only"] = "missing in new"
    verdict[m["_merge"] == "right_only"] = "new cell"
    m["verdict"] = verdict
    return m.drop(columns="_merge").sort_values(keys).reset_index(drop=True)
