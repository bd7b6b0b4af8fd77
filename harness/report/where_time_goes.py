"""The report's "Where the time goes" section and ``enginebench-report why A B``.

From the ``profile_*`` metrics in results.csv (runs with ``measure.profile=true``, harness/profile/cell.py): per
configuration a stacked bar of a decode step, each category's busy and waiting time plus the tail, or busy time
plus the host gap without a timeline (harness/report/step_bars.py), at the smallest and the largest batch
(smallest prompt length); a table per cell diffing each configuration against the baseline (kernels, busy
time, host gap, each category's busy and waiting time, the step tail, and the share of the step difference that
busy time, and busy + waiting time, explain: harness/profile/diff.py), with the five kernels whose time differs
most, read from each run's ``profile/*/summary.json``; energy per prefill and decode token beside tokens per second
where it was measured.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.measure import metrics
from harness.profile import cell as profile
from harness.profile.categories import CATEGORIES
from harness.profile.diff import diff_phase, explained_share, format_diff, percent, read_summaries
from harness.profile.energy import ENERGY_DECODE, ENERGY_PREFILL
from harness.report.step_bars import TIMELINE_METRICS, stacked_bars

CELL = ["model", "weights", "dtype", "quant", "device", "batch_size", "prompt_len", "new_tokens"]


def profile_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, cell) with a profile: the decode step's p50 wall time and the profile metrics."""
    wanted = [profile.KERNELS, profile.BUSY, profile.GAP, *(profile.category_metric(c) for c in CATEGORIES),
              *TIMELINE_METRICS, metrics.DECODE_LATENCY, metrics.DECODE_THROUGHPUT, ENERGY_PREFILL, ENERGY_DECODE]
    ok = tidy[(tidy.status == "ok") & tidy.metric.isin(wanted)].copy()
    ok["quant"] = ok["quant"].astype(object).fillna("none") if "quant" in ok else "none"
    if not (ok.metric == profile.BUSY).any():
        return pd.DataFrame()
    ok["value"] = ok["p50"].where(ok["p50"].notna(), ok["mean"])
    wide = ok.pivot_table(index=["backend", *CELL], columns="metric", values="value", aggfunc="last").reset_index()
    sources = ok.drop_duplicates(["backend", *CELL], keep="last").set_index(["backend", *CELL])["source"]
    wide["source"] = [sources.get(tuple(r)) for r in wide[["backend", *CELL]].itertuples(index=False)]
    return wide[wide[profile.BUSY].notna()].reset_index(drop=True)


def _summary_of(row) -> dict | None:
    """The profile summary.json of a table row, beside the results.csv it came from (None if not there)."""
    if not isinstance(row.get("source"), str):
        return None
    path = profile.profile_path(Path(row["source"]).parent, int(row["batch_size"]), int(row["prompt_len"]),
                                int(row["new_tokens"])) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def diff_rows(table: pd.DataFrame, baseline: str) -> list[dict]:
    """Each configuration minus the baseline, per cell both profiled (ms per step)."""
    rows = []
    for _, cell in table.groupby(CELL):
        base = cell[cell.backend == baseline]
        if base.empty:
            continue
        b = base.iloc[0]
        for _, r in cell[cell.backend != baseline].iterrows():
            step = metrics.DECODE_LATENCY
            row = {"configuration": r.backend, "batch": int(r.batch_size), "prompt": int(r.prompt_len),
                   "step ms": r[step], "Δ step": r[step] - b[step],
                   "Δ kernels": r[profile.KERNELS] - b[profile.KERNELS], "Δ busy": r[profile.BUSY] - b[profile.BUSY],
                   "Δ gap": r[profile.GAP] - b[profile.GAP]}
            for c in CATEGORIES:
                metric = profile.category_metric(c)
                row[f"Δ {c}"] = r[metric] - b[metric]
            row["busy explains"] = percent(explained_share(row["Δ step"], row["Δ gap"]))
            if all(m in table and pd.notna(r[m]) and pd.notna(b[m]) for m in TIMELINE_METRICS):
                for c in CATEGORIES:
                    row[f"Δ {c} wait"] = r[profile.wait_metric(c)] - b[profile.wait_metric(c)]
                row["Δ tail"] = r[profile.TAIL] - b[profile.TAIL]
                accounted = sum(row[f"Δ {c}"] + row[f"Δ {c} wait"] for c in CATEGORIES)
                row["busy+wait explains"] = percent(explained_share(row["Δ step"], row["Δ step"] - accounted))
            a_sum, b_sum = _summary_of(b), _summary_of(r)
            if a_sum and b_sum:
                top = diff_phase(a_sum["decode"], b_sum["decode"])["top_kernels"]
                row["kernels that differ most (Δ µs/step)"] = "; ".join(
                    f"{k['name'][:40]} {k['delta_us']:+.0f}" for k in top)
            rows.append(row)
    return rows


def where_time_goes(tidy: pd.DataFrame, baseline: str | None, plot_dir: Path | None, report_dir: Path,
                    markdown_table) -> list[str]:
    """The section's Markdown lines (empty when no run was profiled)."""
    table = profile_table(tidy)
    if table.empty:
        return []
    parts = ["## Where the time goes", "",
             "Decode steps profiled after each cell's timed iterations (`measure.profile=true`, docs/profiling.md): "
             "kernel time per step by category, and the host gap (the timed step's p50 minus the profiled busy "
             "time). On a CPU the 'kernels' are operators and their self time. Where the profile has a timeline, "
             "each category also has its waiting time (the device's idle time before its kernels, charged to the "
             "kernel that followed it: launch and host time, not time the kernel caused) and the step has its tail "
             "(after its last kernel); busy + waiting + tail is the profiled step, which is what a bar with a timeline "
             "shows (waiting hatched and lighter in its category's colour; without a timeline a bar is busy time "
             "plus the host gap). 'explains' is "
             "max(0, 1 - |residual| / |Δ step|) (docs/profiling.md).", ""]
    if plot_dir is not None:
        parts += [f"![{p.stem}]({p.relative_to(report_dir)})" for p in stacked_bars(table, plot_dir)] + [""]
    cols = ["backend", "batch_size", "prompt_len", metrics.DECODE_LATENCY, profile.KERNELS, profile.BUSY, profile.GAP,
            *(profile.category_metric(c) for c in CATEGORIES)]
    cols += [m for m in TIMELINE_METRICS if m in table and table[m].notna().any()
             and (m != profile.OVERLAP or (table[m].fillna(0) != 0).any())]  # overlap: only where kernels overlapped
    shown = table[cols].rename(columns={metrics.DECODE_LATENCY: "step p50 ms", profile.KERNELS: "kernels/step",
                                        profile.BUSY: "busy ms", profile.GAP: "gap ms",
                                        profile.PROFILED_STEP: "profiled step ms", profile.TAIL: "tail ms",
                                        profile.OVERLAP: "overlap ms",
                                        **{profile.category_metric(c): f"{c} ms" for c in CATEGORIES},
                                        **{profile.wait_metric(c): f"{c} wait ms" for c in CATEGORIES}})
    parts += [markdown_table(shown), ""]
    energy = [m for m in (ENERGY_PREFILL, ENERGY_DECODE) if m in table and table[m].notna().any()]
    if energy:
        parts += ["Energy per token (NVML's energy counter around each phase, docs/profiling.md):", "",
                  markdown_table(table[["backend", "batch_size", "prompt_len", metrics.DECODE_THROUGHPUT, *energy]]),
                  ""]
    reference = baseline if baseline in set(table.backend) else sorted(table.backend.unique())[0]
    rows = diff_rows(table, reference)
    if rows:
        parts += [f"Against `{reference}` (ms per decode step, configuration minus baseline):", "",
                  markdown_table(pd.DataFrame(rows)), ""]
    return parts


def why(path_a: str, path_b: str) -> str:
    """``enginebench-report why A B``: the decode diff (B minus A) of every cell both runs profiled."""
    from harness.report.aggregate import run_label

    found = []
    for raw in (path_a, path_b):
        if not Path(raw).is_dir():
            raise UserError(f"'{raw}' is not a run directory", "give two run directories of measure.profile=true runs")
        summaries = read_summaries(Path(raw))
        if not summaries:
            raise UserError(f"no profile under {raw}", "rerun it with measure.profile=true")
        runs = {s["_run_dir"] for s in summaries.values()}
        if len(runs) > 1:
            raise UserError(f"{raw} holds profiles of {len(runs)} runs",
                            "give one run directory (one configuration) per side")
        found.append((run_label(Path(runs.pop())) or raw, summaries))
    (label_a, a), (label_b, b) = found
    both = sorted(set(a) & set(b), key=lambda c: (c[0], c[2], int(c[5]), int(c[6])))
    if not both:
        raise UserError(f"no cell profiled in both {path_a} and {path_b}",
                        "profile the same model, dtype and grid cells in both runs")
    return "\n\n".join(format_diff(label_a, label_b, c, diff_phase(a[c]["decode"], b[c]["decode"])) for c in both)

