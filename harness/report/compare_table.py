"""How ``enginebench-report compare`` prints its table: rounded milliseconds, the change in per cent with its
interval, the verdict and, where there is none, why — in at most 100 columns (``--wide``: every column, unrounded).

Long configuration labels are numbered (``#1``) and named in full under the table, as are the reasons for a missing
verdict; a line says when either side was measured on a machine that was not quiet (``machine_warnings``), since a
verdict between two noisy runs says little about the code.
"""
from __future__ import annotations

import pandas as pd

from harness.measure import metrics
from harness.record.summary import WIDTH, num

METRIC_WORD = {metrics.DECODE_LATENCY: "decode", metrics.PREFILL_LATENCY: "prefill", metrics.E2E_LATENCY: "e2e"}
WIDE_COLUMNS = ["backend", "batch_size", "prompt_len", "metric", "p50_old", "p50_new", "change", "change_ci_low",
                "change_ci_high", "p_value", "n_old", "n_new", "verdict", "why_no_verdict"]


def percent(v) -> str:
    return "" if v is None or pd.isna(v) else f"{v * 100:+.1f}%"


def readable(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The display table (strings) and the lines that go under it (configuration names, reasons)."""
    labels = list(dict.fromkeys(table.backend))
    numbered = any(len(str(label)) > 24 for label in labels)
    names = {label: (f"#{i + 1}" if numbered else label) for i, label in enumerate(labels)}
    reasons: dict[str, str] = {}
    rows = []
    for r in table.to_dict("records"):
        why = str(r.get("why_no_verdict") or "")
        if why and why not in reasons:
            reasons[why] = chr(ord("a") + len(reasons) % 26)
        low, high = r.get("change_ci_low"), r.get("change_ci_high")
        rows.append({"config": names[r["backend"]], "b": r["batch_size"], "prompt": r["prompt_len"],
                     "metric": METRIC_WORD.get(r["metric"], r["metric"]), "old ms": num(r.get("p50_old")),
                     "new ms": num(r.get("p50_new")), "change": percent(r.get("change")),
                     "95% CI": f"[{percent(low)}, {percent(high)}]" if percent(low) else "",
                     "verdict": r["verdict"], "why": f"({reasons[why]})" if why else ""})
    notes = [f"  {names[label]} = {label}" for label in labels] if numbered else []
    notes += [f"  ({key}) no verdict: {why}" for why, key in reasons.items()]
    return pd.DataFrame(rows), notes


def machine_line(old: pd.DataFrame, new: pd.DataFrame) -> str | None:
    """One line when either side has cells measured while the machine was not quiet."""
    def noisy(tidy: pd.DataFrame) -> int:
        if "machine_warnings" not in tidy:
            return 0
        cells = tidy[tidy.machine_warnings.astype(object).fillna("") != ""]
        return len(cells.drop_duplicates(["backend", "batch_size", "prompt_len"]))

    a, b = noisy(old), noisy(new)
    if not a and not b:
        return None
    return f"warning: machine not quiet for {a} cell(s) of OLD, {b} of NEW: verdicts may reflect the machine"


def render(table: pd.DataFrame, wide: bool = False) -> str:
    if wide:
        return table[[c for c in WIDE_COLUMNS if c in table]].to_string(index=False)
    shown, notes = readable(table)
    text = shown.to_string(index=False)
    if max(map(len, text.splitlines()), default=0) > WIDTH:
        text = shown.drop(columns=["95% CI"]).to_string(index=False)  # --wide has it
    return "\n".join([text, *notes])
