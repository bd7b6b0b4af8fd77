"""The Markdown report of a results set: environment, method, comparison tables, plots, validation, caveats."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.report.comparison import CELL

METHOD = """\
- Each grid cell: reset the KV cache, prefill the prompt batch, then `new_tokens` decode steps feeding back the
  greedy token. Warm-up iterations (`measure.warmup`) are discarded; timed iterations repeat until both
  `measure.min_iters` and `measure.min_seconds` are reached.
- GPU timing: CUDA events recorded around every prefill and decode-step hook call and read after the iteration,
  so no host synchronisation sits inside the timed region. CPU timing: `perf_counter`.
- Statistics over iterations (prefill, end to end) or over all decode steps of all iterations (decode):
  mean, p10/p50/p90/p99, std, min, max. A speedup is "within noise" when the p10-p90 ranges overlap.
- Memory: NVML sampled every `measure.memory_interval_ms` in a background thread (device-wide and this process),
  torch's allocator peak, host RSS; energy from NVML's energy counter where supported.
- Roofline: decode bytes per step (all matmul weights + the filled KV cache) / step time, over a device-to-device
  copy bandwidth measured once per run.
- Validation: logits against the HF model in float32 eager on the same inputs (equal-length and left-padded rows).
"""


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.3g}") -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else floatfmt.format(v)
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def environment_section(infos: list[dict]) -> str:
    rows = []
    for info in infos:
        env, cfg = info.get("environment", {}), info.get("config", {})
        libs = env.get("libraries", {})
        rows.append({"backend": cfg.get("backend", {}).get("name"), "device": env.get("gpu_name") or env.get("cpu"),
                     "driver": env.get("gpu_driver", ""), "cuda": env.get("cuda_runtime", ""),
                     "torch": libs.get("torch", ""), "transformers": libs.get("transformers", ""),
                     "onnxruntime": libs.get("onnxruntime-gpu", libs.get("onnxruntime", "")),
                     "commit": (env.get("git_commit") or "")[:12], "weights": info.get("weights")})
    return markdown_table(pd.DataFrame(rows).drop_duplicates()) if rows else "(no run.json found)"


def write_report(path: Path, tidy: pd.DataFrame, comparison: pd.DataFrame, infos: list[dict],
                 validation: pd.DataFrame, plots: list[Path], baseline: str, sources: list[str]) -> None:
    parts = ["# enginebench report", "", f"Inputs: {', '.join(sources)}", "", "## Environment", "",
             environment_section(infos), "", "## Method", "", METHOD, "## Results", ""]
    backends = sorted(tidy.backend.unique())
    short = comparison[CELL[:0] + ["batch_size", "prompt_len"]].copy()
    for b in backends:
        for col, name in ((f"decode_ms_p50__{b}", f"{b} decode ms"), (f"prefill_ms_p50__{b}", f"{b} prefill ms"),
                          (f"status__{b}", f"{b} status")):
            if col in comparison:
                short[name] = comparison[col]
        if f"decode_ms_speedup__{b}" in comparison:
            short[f"{b} decode speedup vs {baseline}"] = comparison[f"decode_ms_speedup__{b}"].map(
                lambda v: "" if pd.isna(v) else f"{v:.2f}x") + " " + comparison[f"decode_ms_verdict__{b}"]
    for keys, group in comparison.groupby(["model", "dtype", "device"]):
        parts += [f"### {keys[0]}, {keys[1]}, {keys[2]}", "", markdown_table(short.loc[group.index]), ""]
    failed = tidy[tidy.status != "ok"].drop_duplicates(CELL + ["backend"])
    if len(failed):
        parts += ["### Cells that did not produce measurements", "",
                  markdown_table(failed[["backend", "batch_size", "prompt_len", "status", "error"]]), ""]
    if plots:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(path.parent)})" for p in plots] + [""]
    parts += ["## Validation", ""]
    if len(validation):
        cols = [c for c in ["backend", "dtype", "device", "case", "max_abs_diff", "mean_abs_diff", "top1_agreement",
                            "greedy_agreement", "tolerance", "passed", "reason"] if c in validation]
        parts += [markdown_table(validation[cols]), ""]
    else:
        parts += ["No validation results in these inputs.", ""]
    caveats = ["- Speed depends on the architecture, not the weights; generated text from random weights is not "
               "meaningful, and with nearly flat random logits half-precision argmax flips between near-ties "
               "(validation gates half precision on |Δlogit|)."] if (tidy.weights == "random").any() else []
    caveats.append("- TensorRT backends can only execute where TensorRT supports the GPU; cells a backend did not "
                   "run are listed with their status above, never left blank.")
    parts += ["## Caveats", "", *caveats, ""]
    path.write_text("\n".join(parts))
