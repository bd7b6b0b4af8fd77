"""A job's outcome: its exit status and the one line that says why, read back from the files the job wrote (so the
in-process run, an isolated run and a resumed run are judged alike, by what a reader of the results will see).

Exit status: 0 only when every cell finished ok and every validation passed; 1 when any cell did not (error, oom,
crashed, timeout, skipped, load_failed) or a validation failed; 2 bad input and 130 interrupt are decided by the
callers (harness/cli.py), before or instead of an outcome.
"""
from __future__ import annotations

from pathlib import Path

from harness.errors import EXIT_FAILED, EXIT_OK
from harness.record.results import cell_key, read_cells
from harness.record.runrecord import read_run

SHOWN = 6  # failed cells named in the line; the rest are counted


def _failed_validation(info: dict) -> list[str]:
    return [str(r.get("case", "?")) for r in info.get("validation") or [] if not r.get("passed", False)]


def _cells(out_dir: Path) -> list[dict]:
    """First row of every whole cell in results.csv."""
    path = out_dir / "results.csv"
    if not path.exists():
        return []
    seen, cells = set(), []
    for row in read_cells(path)[0]:
        key = cell_key(row)
        if key not in seen:
            seen.add(key)
            cells.append(row)
    return cells


def job_outcome(out_dir: Path, task: str, code: int) -> tuple[int, str]:
    """(exit status, summary line without the results path) of the job in ``out_dir``; ``code`` is what the job
    itself returned (a failed load or generation)."""
    out_dir = Path(out_dir)
    info = read_run(out_dir)
    parts, failed_any = [], code != EXIT_OK
    if task == "benchmark":
        cells = _cells(out_dir)
        failed = [c for c in cells if c.get("status") != "ok"]
        if failed:
            failed_any = True
            named = ", ".join(f"b={c['batch_size']} p={c['prompt_len']} ({c['status']})" for c in failed[:SHOWN])
            more = f" and {len(failed) - SHOWN} more" if len(failed) > SHOWN else ""
            parts.append(f"{len(failed)} of {len(cells)} cells failed: {named}{more}")
            first_error = next((c.get("error") for c in failed if c.get("error")), "")
            if first_error:
                parts.append(f"first error: {first_error[:200]}")
        elif cells:
            parts.append(f"all {len(cells)} cells ok")
    if info.get("load_error") and task != "benchmark":
        parts.append(f"load failed: {info.load_error[:200]}")
    if task in ("benchmark", "validate") and info.get("validation_error"):  # it died or timed out (isolation)
        failed_any = True
        parts.append(f"validation failed ({info.validation_error[:200]})")
    elif task in ("benchmark", "validate") and info.get("validation"):
        bad = _failed_validation(info)
        if bad:
            failed_any = True
            parts.append(f"validation failed ({', '.join(bad)})")
        elif task == "validate":
            parts.append("validation passed")
    if info.get("error") and code != EXIT_OK:  # what ended the job early (harness/run/job.py)
        parts.append(str(info.error)[:200])
    if not parts:
        parts.append("done" if not failed_any else f"failed (status {code})")
    return max(code, EXIT_FAILED if failed_any else EXIT_OK), "; ".join(parts)
