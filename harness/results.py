"""Result files of one job: results.csv (tidy, appended and flushed per cell), summary.csv (one wide row per
cell, rewritten atomically) and run.json (config + environment).

Tidy layout: one row per (cell, metric) with the statistics as columns, so
``pd.read_csv("results.csv").query("metric == 'decode_latency_ms'")`` is the usual first step. Every row carries
the cell's identity (backend, model, weights, dtype, device, batch_size, prompt_len, new_tokens), its status and,
for failed cells, the error. ``cell_rows`` lets a reader (and ``resume``) drop a cell cut short by a kill.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from harness.stats import STAT_NAMES

CELL_KEYS = ("backend", "model", "weights", "dtype", "device", "batch_size", "prompt_len", "new_tokens")
ROW_COLUMNS = (*CELL_KEYS, "metric", "unit", *STAT_NAMES, "status", "error", "validation", "iterations",
               "seed", "backend_info", "cell_rows", "run_id")
SUMMARY_STATS = ("mean", "p10", "p50", "p90", "p99")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers see the old or the new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cell_key(row: dict[str, Any]) -> tuple:
    return tuple(str(row[k]) for k in CELL_KEYS)


def read_complete_rows(path: Path) -> list[dict[str, str]]:
    """Rows of an existing results.csv, keeping only cells whose every row made it to disk."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if None not in r and all(v is not None for v in r.values())]
    by_cell: dict[tuple, list] = {}
    for r in rows:
        by_cell.setdefault(cell_key(r), []).append(r)
    complete = []
    for cell_rows in by_cell.values():
        try:
            expected = int(cell_rows[0]["cell_rows"])
        except (KeyError, ValueError):
            continue
        if len(cell_rows) == expected:
            complete.extend(cell_rows)
    return complete


class ResultsWriter:
    """Appends each finished cell's rows to results.csv at once (flush + fsync), then refreshes summary.csv."""

    def __init__(self, out_dir: Path, resume: bool = False):
        self.out_dir = Path(out_dir)
        self.results_path = self.out_dir / "results.csv"
        self.summary_path = self.out_dir / "summary.csv"
        existing = read_complete_rows(self.results_path) if resume else []
        self.done = {cell_key(r) for r in existing}
        # Rewrite the kept rows so a torn last line from an interrupted run never stays in the file.
        self._rewrite(existing)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=ROW_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.results_path, buf.getvalue())
        if rows:
            self.write_summary()

    def is_done(self, identity: dict[str, Any]) -> bool:
        return cell_key(identity) in self.done

    def append_cell(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            r["cell_rows"] = len(rows)
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=ROW_COLUMNS, extrasaction="ignore", lineterminator="\n").writerows(rows)
        # One write() per cell: a kill leaves either the whole cell or none of it (read_complete_rows checks).
        fd = os.open(self.results_path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, buf.getvalue().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.done.add(cell_key(rows[0]))
        self.write_summary()

    def write_summary(self) -> None:
        import pandas as pd

        tidy = pd.read_csv(self.results_path)
        atomic_write_text(self.summary_path, summarize_wide(tidy).to_csv(index=False))


def summarize_wide(tidy):
    """One row per cell: ``<metric>_<stat>`` columns (single-valued metrics keep their bare name)."""
    import pandas as pd

    keys = list(CELL_KEYS)
    ident = tidy.groupby(keys, dropna=False, sort=False)[["status", "error", "validation", "iterations",
                                                           "backend_info"]].first()
    measured = tidy.dropna(subset=["metric"])
    parts = [ident]
    if len(measured):
        for stat in SUMMARY_STATS:
            wide = measured.pivot_table(index=keys, columns="metric", values=stat, aggfunc="first", dropna=False)
            single = measured.groupby("metric")["n"].max() <= 1
            cols = [m for m in wide.columns if stat == "mean" or not single.get(m, False)]
            wide = wide[cols]
            wide.columns = [m if single.get(m, False) else f"{m}_{stat}" for m in cols]
            parts.append(wide)
    out = pd.concat(parts, axis=1).reset_index()
    return out


def write_run_json(out_dir: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(Path(out_dir) / "run.json", json.dumps(payload, indent=2, default=str) + "\n")


def rows_for_cell(identity: dict[str, Any], metrics: Iterable[tuple[str, str, dict]], **extra) -> list[dict]:
    """Tidy rows for one cell: one per (metric, unit, stats dict); a failed cell gets one row without a metric."""
    rows = [{**identity, "metric": metric, "unit": unit, **stats, **extra} for metric, unit, stats in metrics]
    return rows or [{**identity, "metric": None, "unit": None, **extra}]
