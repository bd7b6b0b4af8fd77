"""The table a job prints at its end, built from its results.csv rows: at most 100 columns, and no number without
what qualifies it. Rows in, text out: the run layer prints it after a job's last cell, the report layer over every
job of a multirun (harness/report/summary.py).

One row per cell: the decode step's and the prefill's median with its 95 % interval (harness/measure/stats.py), the
decode throughput, and a flag column saying why a number should not be taken at face value:

- ``noisy machine``: the machine was not quiet while the cell ran (its ``machine_warnings``, measure/machine_state.py);
- ``host-bound``: the time a user waits per token exceeds the device's own time of the step by more than 10 %
  (the ``host_bound`` column of results.csv, harness/measure/instrument.py): the host, not the device, sets the pace;
- ``two speeds``: the decode steps' p90 is at least 1.5x their p10 (the report's uneven-cell test);
- ``unstable``: fewer than ``MIN_N`` timed iterations, or a CV above ``MAX_CV`` — what keeps a comparison of this
  cell from a verdict (harness/measure/stats.py).

A line under the table says when the machine was not quiet, and which flags appeared mean what.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd

from harness.measure import metrics
from harness.measure.stats import CONFIDENCE, MAX_CV, MIN_N, UNEVEN_P90_OVER_P10
from harness.record.results import read_results_frame

WIDTH = 100
FLAG_MEANING = {
    "noisy machine": "the machine was busy while the cell ran (results.csv: machine_warnings)",
    "host-bound": "the wait per token exceeds the device's own step time by > 10%: the host sets the pace",
    "two speeds": "decode steps ran at two speeds (p90 >= 1.5x p10): the median may describe neither",
    "unstable": f"fewer than {MIN_N} iterations or CV above {MAX_CV:.0%}: no verdict possible",
}


def num(v) -> str:
    """A measurement rounded for reading: three significant digits, never scientific notation."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    v = float(v)
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def with_interval(row) -> str:
    if row is None:
        return ""
    text = num(row.get("p50"))
    low, high = row.get("p50_ci_low"), row.get("p50_ci_high")
    return text + (f" [{num(low)}, {num(high)}]" if num(low) and num(high) else "")


def cell_flags(rows: dict[str, dict], host_bound, warnings: str, iterations) -> list[str]:
    """The flags of one cell from its rows by metric (see the module docstring)."""
    flags = []
    if warnings:
        flags.append("noisy machine")
    if host_bound is not None and not pd.isna(host_bound) and str(host_bound):
        flags.append("host-bound")
    decode = rows.get(metrics.DECODE_LATENCY, {})
    if decode.get("p10") and decode.get("p90", 0) >= UNEVEN_P90_OVER_P10 * decode["p10"]:
        flags.append("two speeds")
    cvs = [rows.get(m, {}).get("cv") for m in (metrics.DECODE_LATENCY, metrics.PREFILL_LATENCY)]
    few = iterations is not None and not pd.isna(iterations) and int(iterations) < MIN_N
    if few or any(cv is not None and not pd.isna(cv) and cv > MAX_CV for cv in cvs):
        flags.append("unstable")
    return flags


def summary_table(tidy: pd.DataFrame, label_column: str | None = None) -> pd.DataFrame:
    """One display row per cell (strings, ready to print); ``label_column``: a first column naming the
    configuration (the combined table of a multirun)."""
    keys = ["backend", "model", "dtype", "device", "batch_size", "prompt_len"]
    out = []
    for _, cell in tidy.groupby(keys, dropna=False, sort=True):
        first = cell.iloc[0]
        rows = {r["metric"]: r for r in cell.dropna(subset=["metric"]).to_dict("records")}
        warnings = str(first.get("machine_warnings", "") or "") if not pd.isna(first.get("machine_warnings")) else ""
        row = {"b": int(first["batch_size"]), "prompt": int(first["prompt_len"]), "status": first["status"],
               f"decode ms [{CONFIDENCE:.0%} CI]": with_interval(rows.get(metrics.DECODE_LATENCY)),
               f"prefill ms [{CONFIDENCE:.0%} CI]": with_interval(rows.get(metrics.PREFILL_LATENCY)),
               "tok/s": num(rows.get(metrics.DECODE_THROUGHPUT, {}).get("p50")),
               "flags": ", ".join(cell_flags(rows, first.get("host_bound"), warnings, first.get("iterations")))
               if first["status"] == "ok" else "",
               "_warnings": warnings}
        if label_column:
            row = {label_column: first["backend"], **row}
        out.append(row)
    return pd.DataFrame(out)


def _widest(text: str) -> int:
    return max(map(len, text.splitlines()), default=0)


def render(table: pd.DataFrame, width: int = WIDTH) -> str:
    """The table as text within ``width`` columns: if it is wider, the throughput column goes first, then the flags
    leave the table for one line per flagged cell under it (nothing is cut)."""
    shown = table.drop(columns=[c for c in table.columns if c.startswith("_")])
    shown = shown.loc[:, [c for c in shown.columns if (shown[c].astype(str) != "").any()]]
    text = shown.to_string(index=False)
    if _widest(text) > width and "tok/s" in shown:
        shown = shown.drop(columns="tok/s")
        text = shown.to_string(index=False)
    if _widest(text) > width and "flags" in shown:
        flagged = shown[shown["flags"] != ""]
        text = shown.drop(columns="flags").to_string(index=False)
        for _, row in flagged.iterrows():
            job = f"job {row['job']} " if "job" in row else ""  # the multirun's combined table
            text += "\n" + textwrap.fill(f"{job}b={row['b']} prompt={row['prompt']}: {row['flags']}", width,
                                         subsequent_indent="  ")
    return text


def footer(table: pd.DataFrame) -> list[str]:
    """The machine-state warning (one line) and the meaning of each flag that appears."""
    lines = []
    noisy = table[table["_warnings"] != ""] if "_warnings" in table else table.iloc[0:0]
    if len(noisy):
        first = noisy["_warnings"].iloc[0].split(";")[0][:40]
        lines.append(f"warning: machine not quiet during {len(noisy)} of {len(table)} cells ({first}): "
                     "numbers may be off")
    used = {f for flags in table.get("flags", []) for f in flags.split(", ") if f}
    lines += [f"{flag}: {meaning}" for flag, meaning in FLAG_MEANING.items() if flag in used]
    return lines


def print_table(table: pd.DataFrame, title: str) -> None:
    """``title``, the table (:func:`render`) and its :func:`footer` on stdout."""
    print(textwrap.fill(title, WIDTH, subsequent_indent="  "), flush=True)
    print(render(table), flush=True)
    for line in footer(table):
        print(textwrap.fill(line, WIDTH, subsequent_indent="  "), flush=True)


def print_job_summary(results_csv) -> None:
    """The end-of-job table of one results.csv on stdout."""
    tidy, _ = read_results_frame(Path(results_csv))
    if tidy.empty:
        return
    first = tidy.iloc[0]
    title = (f"{first['backend']}: {first['model']} ({first['weights']} weights), {first['dtype']}, "
             f"{first['device']}, {first['new_tokens']} new tokens")
    print_table(summary_table(tidy), title)
