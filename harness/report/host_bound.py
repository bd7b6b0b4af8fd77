"""The report's list of host-bound cells: where the time a user waits per token (the sustained clock) exceeds the
device's own time of the step by more than 10 % (harness/measure/instrument.py), so the host, not the GPU, sets the
pace. Read from the ``host_bound`` column of results.csv and the two clocks' medians; runs timed before the sustained
clock have neither and list nothing."""
from __future__ import annotations

import pandas as pd

from harness.measure import metrics

PAIRS = {"decode": (metrics.DECODE_LATENCY, metrics.DECODE_DEVICE),
         "prefill": (metrics.PREFILL_LATENCY, metrics.PREFILL_DEVICE)}


def host_bound_cells(tidy: pd.DataFrame) -> list[str]:
    """One line per (configuration, cell) flagged host-bound, with both clocks' medians of each flagged phase."""
    from harness.record.results import CELL_KEYS
    from harness.report.aggregate import latest_per_cell

    if "host_bound" not in tidy.columns:
        return []
    ok = latest_per_cell(tidy[tidy.status == "ok"])
    flagged = ok[ok.host_bound.fillna("").astype(str).str.len() > 0].drop_duplicates([*CELL_KEYS, "backend"])
    lines = []
    for r in flagged.itertuples(index=False):
        cell = ok[(ok.backend == r.backend) & (ok.batch_size == r.batch_size) & (ok.prompt_len == r.prompt_len)
                  & (ok.new_tokens == r.new_tokens)]
        p50 = dict(zip(cell.metric, cell.p50))
        parts = [f"{phase} {p50.get(sustained, float('nan')):.3g} ms sustained vs "
                 f"{p50.get(device, float('nan')):.3g} ms on the device"
                 for phase, (sustained, device) in PAIRS.items() if phase in str(r.host_bound).split("+")]
        lines.append(f"- {r.backend} b={r.batch_size} p={r.prompt_len}: " + "; ".join(parts))
    return lines
