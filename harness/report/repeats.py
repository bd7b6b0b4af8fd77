"""Repeats of a configuration in a results set (``measure.repeats``): combined into one number per cell with an
interval that includes the run-to-run spread, and the verdict rule that fits the number of runs a side.

A cell's repeats are its rows of one configuration with different ``repeat`` values (a results.csv from before
repeats has repeat 0 only). Rows with the same repeat from several inputs are not repeats but separate runs: the
last one given is used, as for any cell (harness/report/aggregate.py).

- :func:`combine_repeats`: one row per (cell, configuration, metric). For a latency whose samples were kept by every
  repeat: p50 = the central value over runs (harness/record/replicated.py), its interval between runs, n = every unit of
  every run, CV over those units, ``repeats`` = the number of runs. Other statistics: the median over the repeats.
- :func:`judge`: the verdict of B against A from their runs: between runs with at least two a side
  (harness/record/replicated.py), else within a run (harness/measure/stats.py), scope named in the verdict.
- :func:`repeat_order`: the order in which the repeats were loaded, from each run.json, for the report.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from harness.measure.sample_units import COMPARABLE, comparison_units
from harness.report.aggregate import CELL, cell_samples

KEY = CELL + ["backend", "metric"]
STATS = ["mean", "p10", "p50", "p90", "p99", "std", "min", "max", "cv"]


def per_repeat(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, configuration, metric, repeat): the last input wins."""
    tidy = tidy if "repeat" in tidy.columns else tidy.assign(repeat=0)
    return tidy.drop_duplicates(subset=KEY + ["repeat"], keep="last")


def run_units(rows: list[dict], metric: str) -> list[np.ndarray] | None:
    """The independent units of ``metric`` of each repeat's row (None when a repeat kept no samples)."""
    units = []
    for row in rows:
        samples = cell_samples(row)
        if samples is None:
            return None
        units.append(comparison_units(samples, metric))
    return units


def run_timings(rows: list[dict]) -> list[str]:
    """How the repeats' samples were timed (harness/record/samples.py ``timing``), each kind once."""
    return sorted({(cell_samples(row) or {}).get("timing", "") for row in rows})


def combine_repeats(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, configuration, metric) with ``repeats`` and, for latencies, statistics over all runs; the
    rows of every repeat stay reachable through :func:`repeat_rows` (column ``_repeat_rows``)."""
    from harness.record.replicated import between_runs_interval, central_value

    rows = per_repeat(tidy)
    out = []
    for _, group in rows.groupby(KEY, dropna=False, sort=False):
        records = group.sort_values("repeat").to_dict("records")
        row = dict(records[-1])
        row["repeats"] = len(records)
        row["_repeat_rows"] = records
        if len(records) > 1:
            ok = [r for r in records if r.get("status") == "ok"]
            for stat in STATS:
                if stat in group.columns:
                    row[stat] = pd.to_numeric(pd.Series([r.get(stat) for r in ok]), errors="coerce").median()
            units = run_units(ok, row["metric"]) if row["metric"] in COMPARABLE and len(ok) > 1 else None
            if units:
                pooled = np.concatenate(units)
                row["p50"] = central_value(units)
                row["p50_ci_low"], row["p50_ci_high"] = between_runs_interval(units)
                row["p10"], row["p90"] = np.percentile(pooled, [10, 90])
                row["n"] = pooled.size
                row["cv"] = float(pooled.std(ddof=1) / pooled.mean()) if pooled.size > 1 else float("nan")
            row["status"] = "ok" if len(ok) == len(records) else next(r["status"] for r in records
                                                                      if r.get("status") != "ok")
        out.append(row)
    return pd.DataFrame(out, columns=[*rows.columns, "repeats", "_repeat_rows"]) if out else rows.assign(
        repeats=pd.Series(dtype=int), _repeat_rows=pd.Series(dtype=object))


def repeat_rows(row) -> list[dict]:
    rows = row.get("_repeat_rows") if isinstance(row, dict) else getattr(row, "_repeat_rows", None)
    return rows if isinstance(rows, list) else [dict(row)]


def judge(runs_a: list[np.ndarray], runs_b: list[np.ndarray], **options):
    """B against A: between runs with at least two runs a side, else within a run (all units of a side pooled)."""
    from harness.measure.stats import compare_samples
    from harness.record.replicated import compare_runs_samples

    options = {k: v for k, v in options.items() if v is not None}  # alpha None: each rule's own default
    if min(len(runs_a), len(runs_b)) >= 2:
        return compare_runs_samples(runs_a, runs_b, **options)
    v = compare_samples(np.concatenate(runs_a), np.concatenate(runs_b), **options)
    v.runs_a, v.runs_b = len(runs_a), len(runs_b)
    return v


def verdict_words(verdict, words: dict[str, str]) -> str:
    """``faster`` between runs; ``faster within this run`` on one run a side (it says nothing of a rerun)."""
    word = words.get(verdict.verdict, verdict.verdict)
    return f"{word} within this run" if verdict.verdict in words and verdict.scope == "within run" else word


def repeat_order(infos: list[dict]) -> list[str]:
    """Lines for the report: how many repeats each configuration ran and the order their loads started."""
    loads = []
    for info in infos:
        record = info.get("repeats") or {}
        for load in record.get("loads", []):
            loads.append((load.get("started") or 0, info.get("_configuration") or "?", load.get("repeat"),
                          record.get("count"), record.get("schedule", "")))
    if not loads:
        return []
    loads.sort()
    counts = {}
    for _, config, _, count, _ in loads:
        counts[config] = count
    schedules = sorted({s for *_, s in loads if s})
    order = ", ".join(f"{config} #{repeat}" for _, config, repeat, _, _ in loads)
    start = datetime.fromtimestamp(loads[0][0], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"Repeats per configuration: {', '.join(f'{c} x{k}' for c, k in counts.items())}; "
            f"scheduled {'; '.join(schedules)}.", "",
            f"Order in which the repeats were loaded (from {start}): {order}.", ""]
