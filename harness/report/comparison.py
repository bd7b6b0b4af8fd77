"""comparison.csv: one row per grid cell, each backend's key metrics side by side, and each backend's speedup over
the baseline with a noise verdict (the p10-p90 ranges of the two overlap = "within noise")."""
from __future__ import annotations

import pandas as pd

CELL = ["model", "weights", "dtype", "device", "batch_size", "prompt_len", "new_tokens"]
KEY_METRICS = {  # metric -> short name in comparison.csv
    "decode_latency_ms": "decode_ms",
    "prefill_latency_ms": "prefill_ms",
    "e2e_throughput_tok_s": "e2e_tok_s",
    "decode_bandwidth_frac": "bw_frac",
}
MEMORY = ["gpu_process_used_peak_mib", "torch_allocated_peak_mib", "host_rss_peak_mib"]


def cell_status(tidy: pd.DataFrame) -> pd.DataFrame:
    return tidy.groupby(CELL + ["backend"], dropna=False)[["status", "error", "validation"]].first().reset_index()


def comparison_table(tidy: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Wide comparison; a backend absent from a cell that others ran is marked ``not run``, never left blank."""
    # the latest measurement wins when the same cell of the same backend appears in several inputs
    tidy = tidy.drop_duplicates(subset=CELL + ["backend", "metric"], keep="last")
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
        for metric, short in KEY_METRICS.items():
            m = tidy[(tidy.backend == backend) & (tidy.metric == metric)][CELL + ["p10", "p50", "p90"]]
            m = cells.merge(m, on=CELL, how="left")
            for stat in ("p50", "p10", "p90"):
                cols[f"{short}_{stat}__{backend}"] = m[stat].values
        mem = tidy[(tidy.backend == backend) & (tidy.metric.isin(MEMORY))]
        for metric in MEMORY:
            m = cells.merge(mem[mem.metric == metric][CELL + ["mean"]], on=CELL, how="left")
            if m["mean"].notna().any():
                cols[f"{metric}__{backend}"] = m["mean"].values
    out = pd.concat([cells, pd.DataFrame(cols, index=cells.index)], axis=1)
    if baseline in backends:
        out = pd.concat([out, _speedups(out, baseline, [b for b in backends if b != baseline])], axis=1)
    return out.sort_values(CELL).reset_index(drop=True)


def _speedups(out: pd.DataFrame, baseline: str, backends: list[str]) -> pd.DataFrame:
    """Each backend's p50 speedup over the baseline, and whether their p10-p90 ranges overlap (within noise)."""
    cols: dict[str, pd.Series] = {}
    for backend in backends:
        for short in ("decode_ms", "prefill_ms"):
            base, other = f"{short}_{{}}__{baseline}", f"{short}_{{}}__{backend}"
            speedup = out[base.format("p50")] / out[other.format("p50")]
            overlap = (out[other.format("p10")] <= out[base.format("p90")]) & \
                      (out[base.format("p10")] <= out[other.format("p90")])
            verdict = pd.Series("", index=out.index, dtype=object)
            measured = out[other.format("p50")].notna() & out[base.format("p50")].notna()
            verdict[measured & overlap] = "within noise"
            verdict[measured & ~overlap & (speedup > 1)] = "faster"
            verdict[measured & ~overlap & (speedup < 1)] = "slower"
            cols[f"{short}_speedup__{backend}"], cols[f"{short}_verdict__{backend}"] = speedup, verdict
    return pd.DataFrame(cols, index=out.index)
