"""``compare --fail-on-regression``: which cells fail the gate, one line each.

A gate passes only what it could judge: a regression (between runs, or within this run when each side has one run),
a cell that failed in NEW, and a cell that could not be judged (``unstable``: too few samples or too noisy;
``untested``: a side kept no samples) all fail it. ``--allow-unstable`` lets the last two pass, as before.
"""
from __future__ import annotations

import pandas as pd

UNJUDGED = ("unstable", "untested")


def _fails(verdict: str, allow_unstable: bool) -> bool:
    if verdict.startswith("regression"):
        return True
    if verdict.endswith(" in new") and verdict != "missing in new":  # e.g. "error in new", "oom in new"
        return True
    return verdict in UNJUDGED and not allow_unstable


def gate_failures(table: pd.DataFrame, allow_unstable: bool = False) -> list[str]:
    """One line per failing cell of a compare table: its verdict, configuration, cell, metric and why."""
    lines = []
    for r in table.to_dict("records"):
        verdict = str(r.get("verdict") or "")
        if not _fails(verdict, allow_unstable):
            continue
        change = r.get("change")
        what = f" ({change:+.1%})" if isinstance(change, float) and pd.notna(change) else ""
        why = f": {r['why_no_verdict']}" if r.get("why_no_verdict") else ""
        hint = " (one run a side; rerun both with measure.repeats=3 or more to confirm)" \
            if verdict.endswith("within this run") else ""
        hint += " (--allow-unstable lets it pass)" if verdict in UNJUDGED else ""
        lines.append(f"{verdict}: {r['backend']} b={r['batch_size']} p={r['prompt_len']} {r['metric']}"
                     f"{what}{why}{hint}")
    return lines
