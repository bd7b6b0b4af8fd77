"""Result files of one job: results.csv (tidy, appended and flushed per cell), summary.csv (one wide row per
cell, rewritten atomically) and run.json (config + environment).

Tidy layout: one row per (cell, metric) with the statistics as columns, so
``pd.read_csv("results.csv").query("metric == 'decode_latency_ms'")`` is the usual first step. Every row carries
the cell's identity (backend, model, weights, dtype, device, batch_size, prompt_len, new_tokens), its status and,
for failed cells, the error. A cell is appended whole or not at all (truncated back on a failed write), and
``cell_rows`` lets every reader (report, compare, ``resume``) skip, and say it skipped, a cell cut short by a kill.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from harness import progress
from harness.measure.stats import STAT_NAMES

CELL_KEYS = ("backend", "model", "weights", "dtype", "quant", "device", "batch_size", "prompt_len", "new_tokens",
             "repeat")  # repeat: which load of the backend measured the cell (measure.repeats; 0 in older files)
# The job's accuracy against the float32 model (harness/accuracy/numerics.py; the worst validation case), on every row
# so that speed and accuracy sit side by side; empty when validation did not run.
ACCURACY_COLUMNS = ("accuracy_max_abs_diff", "accuracy_mean_abs_diff", "accuracy_kl", "accuracy_top1",
                    "accuracy_greedy", "accuracy_perplexity", "reference_perplexity")
# host_bound: the phases ("prefill", "decode", joined by "+") whose sustained time exceeds the device's by more
# than 10 % (harness/measure/instrument.py); empty when neither does, and in runs that predate the two clocks.
ROW_COLUMNS = (*CELL_KEYS, "metric", "unit", *STAT_NAMES, "status", "error", "validation", *ACCURACY_COLUMNS,
               "iterations", "seed", "backend_info", "machine_warnings", "host_bound", "cell_rows", "run_id")
SUMMARY_STATS = ("mean", "p10", "p50", "p90", "p99")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers see the old or the new file."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; set straight back
    os.umask(mask)
    return mask


def cell_key(row: dict[str, Any]) -> tuple:
    # results written before the quant column existed were unquantized, before the repeat column had one repeat
    return tuple(str(row.get(k) or "none") if k == "quant" else _repeat_of(row) if k == "repeat" else str(row[k])
                 for k in CELL_KEYS)


def _repeat_of(row: dict[str, Any]) -> str:
    value = row.get("repeat")
    return str(int(float(value))) if value not in (None, "") else "0"


def read_cells(path: Path) -> tuple[list[dict[str, str]], str | None]:
    """The rows of a results.csv whose cell made it to disk whole, and what was skipped (None when nothing was).

    Skipped: a last line without its newline (a write cut short by a kill or a full disk), rows with too few or
    too many fields, and the rows of a cell that has fewer rows than its ``cell_rows`` says."""
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8", errors="replace")
    skipped = []
    if text and not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        skipped.append(f"a torn last line ({len(text) - cut} characters)")
        text = text[:cut]
    reader = csv.DictReader(io.StringIO(text))
    rows, malformed = [], 0
    for r in reader:
        if None in r or any(v is None for v in r.values()):
            malformed += 1
        else:
            rows.append(r)
    if malformed:
        skipped.append(f"{malformed} malformed row(s)")
    if "cell_rows" not in (reader.fieldnames or []):
        return rows, "; ".join(skipped) or None  # not ours (the caller says so), or from before cell_rows
    # A cell's rows are consecutive (one write each), so chunks of consecutive rows of one cell, cut at its
    # cell_rows, are the writes; this also holds in merged files where one cell appears once per source.
    complete, torn_cells, chunk = [], 0, []
    for r in [*rows, None]:
        if chunk and (r is None or cell_key(r) != cell_key(chunk[0])):
            torn_cells += 1  # the previous chunk ended before reaching its cell_rows
            chunk = []
        if r is None:
            break
        chunk.append(r)
        expected = _row_count(chunk[0]["cell_rows"])
        if expected is None:
            torn_cells, chunk = torn_cells + 1, []
        elif len(chunk) >= expected:  # 0: a row merged from a file that predates cell_rows, kept as it is
            complete.extend(chunk)
            chunk = []
    if torn_cells:
        skipped.append(f"{torn_cells} incomplete cell(s)")
    return complete, "; ".join(skipped) or None


def _row_count(value: str) -> int | None:
    """cell_rows as written ("3"), as pandas rewrites it in a merged file ("3.0"), empty (0: unknown); else None."""
    if value.strip() == "":
        return 0
    try:
        count = float(value)
    except ValueError:
        return None
    return int(count) if count.is_integer() and count >= 1 else None


def read_complete_rows(path: Path) -> list[dict[str, str]]:
    """Rows of an existing results.csv, keeping only cells whose every row made it to disk."""
    return read_cells(path)[0] if Path(path).exists() else []


def read_results_frame(path: Path):
    """A results.csv as a DataFrame of its whole cells, and what was skipped (see :func:`read_cells`)."""
    import pandas as pd

    from harness.errors import UserError

    path = Path(path)
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes, not even a header)",
                        "give a results.csv that enginebench wrote, or rerun the job that should have written it")
    rows, skipped = read_cells(path)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return pd.read_csv(io.StringIO(buf.getvalue())), skipped


# Failures that the user may have fixed since (a checkpoint, a driver, a timeout): resume runs these cells again.
# oom and skipped stay: they describe the cell on this hardware, and re-running them would hit the same wall.
RETRY_STATUSES = ("load_failed", "error", "crashed", "timeout")


class ResultsWriter:
    """Appends each finished cell's rows to results.csv at once (flush + fsync), then refreshes summary.csv.

    With ``resume``, the whole cells already in results.csv are kept (a torn tail is dropped and reported), minus
    the failed ones (``RETRY_STATUSES``) unless ``retry_failed`` is false: those run again."""

    def __init__(self, out_dir: Path, resume: bool = False, retry_failed: bool = True):
        self.out_dir = Path(out_dir)
        self.results_path = self.out_dir / "results.csv"
        self.summary_path = self.out_dir / "summary.csv"
        existing, skipped = read_cells(self.results_path) if resume and self.results_path.exists() else ([], None)
        if skipped:
            progress.say(f"resume: skipped {skipped} in {self.results_path} (those cells run again)")
        if retry_failed:
            failed = {cell_key(r) for r in existing if r["status"] in RETRY_STATUSES}
            if failed:
                progress.say(f"resume: {len(failed)} failed cell(s) run again (retry_failed=false keeps them)")
            existing = [r for r in existing if cell_key(r) not in failed]
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
        append_whole(self.results_path, buf.getvalue().encode())
        self.done.add(cell_key(rows[0]))
        self.write_summary()

    def write_summary(self) -> None:
        tidy, _ = read_results_frame(self.results_path)
        atomic_write_text(self.summary_path, summarize_wide(tidy).to_csv(index=False))


def append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` whole or not at all: written, fsynced, and on any failure (a full disk, a quota, a short
    write) the file is truncated back to its previous length before the error goes on."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]  # os.write may write less than asked (a full disk)
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def summarize_wide(tidy):
    """One row per cell: ``<metric>_<stat>`` columns (single-valued metrics keep their bare name)."""
    import pandas as pd

    keys = list(CELL_KEYS)
    # rows from before the quant column count as unquantized, from before the repeat column as repeat 0
    tidy = tidy.assign(quant=tidy["quant"].astype(object).fillna("none") if "quant" in tidy else "none",
                       repeat=tidy["repeat"].fillna(0).astype(int) if "repeat" in tidy else 0)
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
    # pivot_table(dropna=False) spans every batch x prompt combination: keep only the cells that have rows
    out = pd.concat(parts, axis=1).reindex(ident.index).reset_index()
    return out


def rows_for_cell(identity: dict[str, Any], metrics: Iterable[tuple[str, str, dict]], **extra) -> list[dict]:
    """Tidy rows for one cell: one per (metric, unit, stats dict); a failed cell gets one row without a metric."""
    rows = [{**identity, "metric": metric, "unit": unit, **stats, **extra} for metric, unit, stats in metrics]
    return rows or [{**identity, "metric": None, "unit": None, **extra}]
