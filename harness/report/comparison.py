"""comparison.csv: one row per grid cell, each configuration's key metrics side by side (median, p10/p90, n, CV and
the median's confidence interval, and how many repeats they combine), and each configuration's speedup over the
baseline with a verdict from a test on the kept samples of both sides: ``faster``/``slower`` between runs (at least
two repeats a side, harness/record/replicated.py), ``faster within this run``/``slower within this run`` with one run a
side (harness/measure/stats.py), ``within noise``, ``unstable`` (too few samples or too noisy to judge) or ``untested``
(a run that kept no samples). ``_scope`` says which rule judged, ``_resolves`` the smallest relative change the pair
could have called."""
from __future__ import annotations

import pandas as pd

from harness.measure import metrics
from harness.report.aggregate import CELL
from harness.report.repeats import combine_repeats, judge, repeat_rows, run_units, verdict_words

KEY_METRICS = {  # metric -> short name in comparison.csv
    metrics.DECODE_LATENCY: "decode_ms",
    metrics.PREFILL_LATENCY: "prefill_ms",
    metrics.E2E_THROUGHPUT: "e2e_tok_s",
    metrics.DECODE_BANDWIDTH_FRAC: "bw_frac",
}
TESTED = {"decode_ms": metrics.DECODE_LATENCY, "prefill_ms": metrics.PREFILL_LATENCY}  # speedups with a verdict
SPREAD = ("n", "cv", "p50_ci_low", "p50_ci_high", "repeats")  # written for the tested metrics where results have them
MEMORY = [metrics.GPU_PROCESS_PEAK, metrics.TORCH_ALLOCATED_PEAK, metrics.HOST_RSS_PEAK]
VERDICT = {"lower": "faster", "higher": "slower"}  # latency of the configuration vs the baseline's


# per backend and cell, beside the status: the weight scheme and the job's accuracy against float32
QUANT_COLUMNS = {"quant": "quant", "accuracy_max_abs_diff": "max_abs_diff", "accuracy_kl": "kl",
                 "accuracy_greedy": "greedy", "accuracy_perplexity": "perplexity"}


def cell_status(tidy: pd.DataFrame) -> pd.DataFrame:
    cols = ["status", "error", "validation"] + (["machine_warnings"] if "machine_warnings" in tidy else []) \
        + [c for c in QUANT_COLUMNS if c in tidy]
    return tidy.groupby(CELL + ["backend"], dropna=False)[cols].first().reset_index()


def comparison_table(tidy: pd.DataFrame, baseline: str | None, test_options: dict | None = None) -> pd.DataFrame:
    """Wide comparison; a configuration absent from a cell that others ran is marked ``not run``, never left
    blank. ``baseline`` must already be resolved (:func:`harness.record.labels.resolve_baseline`); None: no
    speedup columns."""
    tidy = combine_repeats(tidy)
    backends = sorted(tidy.backend.unique())
    status = cell_status(tidy)
    cells = status[CELL].drop_duplicates().reset_index(drop=True)
    cols: dict[str, object] = {}  # gathered, then joined once (column-by-column inserts fragment the frame)
    for backend in backends:
        st = status[status.backend == backend].drop(columns="backend")
        merged = cells.merge(st, on=CELL, how="left")
        cols[f"status__{backend}"] = merged.status.astype(object).fillna("not run").values
        cols[f"error__{backend}"] = merged.error.astype(object).fillna("").values
        cols[f"validation__{backend}"] = merged.validation.astype(object).fillna("").values
        if "machine_warnings" in merged:
            cols[f"machine_warnings__{backend}"] = merged.machine_warnings.astype(object).fillna("").values
        for col, short in QUANT_COLUMNS.items():
            if col in merged and (col == "quant" or merged[col].notna().any()):
                values = merged[col]
                cols[f"{short}__{backend}"] = values.astype(object).fillna("none").values if col == "quant" \
                    else values.values
        for metric, short in KEY_METRICS.items():
            stats = ["p50", "p10", "p90"] + [s for s in SPREAD if short in TESTED and s in tidy.columns]
            m = tidy[(tidy.backend == backend) & (tidy.metric == metric)][CELL + stats]
            m = cells.merge(m, on=CELL, how="left")
            for stat in stats:
                cols[f"{short}_{stat}__{backend}"] = m[stat].values
        mem = tidy[(tidy.backend == backend) & (tidy.metric.isin(MEMORY))]
        for metric in MEMORY:
            m = cells.merge(mem[mem.metric == metric][CELL + ["mean"]], on=CELL, how="left")
            if m["mean"].notna().any():
                cols[f"{metric}__{backend}"] = m["mean"].values
    out = pd.concat([cells, pd.DataFrame(cols, index=cells.index)], axis=1)
    if baseline is not None and baseline in backends:
        others = [b for b in backends if b != baseline]
        out = pd.concat([out, _speedups(tidy, out, baseline, others, test_options or {})], axis=1)
    return out.sort_values(CELL).reset_index(drop=True)


def _units(tidy: pd.DataFrame, backend: str, metric: str) -> dict[tuple, object]:
    """Cell -> the independent samples of ``metric``, one array per repeat that measured it (None where a repeat
    kept none)."""
    rows = tidy[(tidy.backend == backend) & (tidy.metric == metric) & (tidy.status == "ok")]
    return {tuple(row[c] for c in CELL): run_units(repeat_rows(row), metric) for row in rows.to_dict("records")}


def _speedups(tidy: pd.DataFrame, out: pd.DataFrame, baseline: str, backends: list[str],
              test_options: dict) -> pd.DataFrame:
    """Per configuration and tested metric: speedup = baseline median / configuration median, its interval, the
    test's p-value and verdict, the rule that judged (scope), the smallest change it could call, and the number of
    independent samples (and runs) on each side."""
    cols: dict[str, list] = {}
    keys = [tuple(r) for r in out[CELL].itertuples(index=False)]
    for short, metric in TESTED.items():
        base_units = _units(tidy, baseline, metric)
        for backend in backends:
            other_units = _units(tidy, backend, metric)
            speedup, low, high, pval, verdict, why, n, scope, resolves = [], [], [], [], [], [], [], [], []
            for i, key in enumerate(keys):
                base_p50, other_p50 = out[f"{short}_p50__{baseline}"][i], out[f"{short}_p50__{backend}"][i]
                a, b = base_units.get(key), other_units.get(key)
                speedup.append(base_p50 / other_p50 if pd.notna(base_p50) and pd.notna(other_p50) else float("nan"))
                if pd.isna(base_p50) or pd.isna(other_p50) or a is None or b is None:
                    low.append(float("nan")), high.append(float("nan")), pval.append(float("nan"))
                    scope.append(""), resolves.append(float("nan")), n.append("")
                    untested = pd.notna(base_p50) and pd.notna(other_p50)
                    verdict.append("untested" if untested else ""), why.append("no samples kept" if untested else "")
                    continue
                v = judge(a, b, **test_options)  # ratio = other / baseline latency
                speedup[-1] = 1 / v.ratio if v.ratio else float("nan")  # the estimator the interval is about
                low.append(1 / v.ratio_ci_high if v.ratio_ci_high else float("nan"))
                high.append(1 / v.ratio_ci_low if v.ratio_ci_low else float("nan"))
                pval.append(v.p_value)
                verdict.append(verdict_words(v, VERDICT))
                why.append(v.reason)
                scope.append(v.scope)
                resolves.append(v.resolves)
                n.append(f"{v.n_a} vs {v.n_b}" + (f" ({v.runs_a} vs {v.runs_b} runs)" if v.scope != "within run"
                                                   else ""))
            cols[f"{short}_speedup__{backend}"] = speedup
            cols[f"{short}_speedup_ci_low__{backend}"] = low
            cols[f"{short}_speedup_ci_high__{backend}"] = high
            cols[f"{short}_p_value__{backend}"] = pval
            cols[f"{short}_verdict__{backend}"] = verdict
            cols[f"{short}_why_no_verdict__{backend}"] = why
            cols[f"{short}_n_tested__{backend}"] = n
            cols[f"{short}_scope__{backend}"] = scope
            cols[f"{short}_resolves__{backend}"] = resolves
    return pd.DataFrame(cols, index=out.index)
