"""Progress on long work: a bar over grid cells (with the iteration count of the cell in progress), status lines
and the summary table at the end. Everything goes to stderr except the summary table (stdout)."""
from __future__ import annotations

import contextlib
import sys

from tqdm import tqdm

from harness import metrics

_current: "CellBar | None" = None


def say(message: str) -> None:
    if _current is not None:
        _current.bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


class CellBar:
    def __init__(self, total: int, label: str):
        self.bar = tqdm(total=total, desc=label, unit="cell", file=sys.stderr, dynamic_ncols=True,
                        disable=None)  # None: off when stderr is not a terminal
        self.failed = 0

    def describe(self, text: str) -> None:
        self.bar.set_description(text)

    def iteration(self, n: int) -> None:
        self.bar.set_postfix_str(f"iter {n}" + (f", {self.failed} failed" if self.failed else ""))

    def advance(self, status: str) -> None:
        if status != "ok":
            self.failed += 1
            say(f"cell finished with status {status}")
        self.bar.update(1)


@contextlib.contextmanager
def cells(total: int, label: str):
    global _current
    _current = CellBar(total, label)
    try:
        yield _current
    finally:
        _current.bar.close()
        _current = None


def cell_progress(iteration: int) -> None:
    if _current is not None:
        _current.iteration(iteration)


SUMMARY_COLUMNS = ["backend", "batch_size", "prompt_len", "status", f"{metrics.PREFILL_LATENCY}_p50",
                   f"{metrics.DECODE_LATENCY}_p50", f"{metrics.DECODE_LATENCY}_p90", f"{metrics.DECODE_THROUGHPUT}_p50",
                   f"{metrics.E2E_LATENCY}_p50", metrics.GPU_PROCESS_PEAK, metrics.TORCH_ALLOCATED_PEAK,
                   metrics.HOST_RSS_PEAK, "validation"]


def print_summary(summary_csv) -> None:
    import pandas as pd

    table = pd.read_csv(summary_csv)
    cols = [c for c in SUMMARY_COLUMNS if c in table.columns and table[c].notna().any()]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)
