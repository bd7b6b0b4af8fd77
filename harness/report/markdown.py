"""The Markdown report of a results set: environment, method, comparison tables, plots, validation, caveats."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.measure.stats import CONFIDENCE, UNEVEN_P90_OVER_P10
from harness.record.results import atomic_write_text
from harness.report.comparison import CELL

METHOD = """\
- Each grid cell: reset the KV cache, prefill the prompt batch, then `new_tokens` decode steps feeding back the
  greedy token. Warm-up iterations (`measure.warmup`) are discarded; timed iterations repeat until both
  `measure.min_iters` and `measure.min_seconds` are reached and, with `measure.target_rel_ci`, until the median's
  confidence interval is that tight (or `measure.max_seconds` has passed). Every timed sample is kept
  (`samples/` in each run directory).
- Two clocks per step (harness/measure/instrument.py). The loop takes every token to the host and feeds it back, as a
  serving loop does. The latencies are *sustained*: the wall-clock interval between consecutive step starts
  (prefill: to the first token on the host). `*_device_ms` is the hook call on the device clock (CUDA events; on
  a CPU the call's own time), and the bandwidth and TFLOP/s metrics use it. Runs whose samples say
  `device-unsynced` were timed before this, with events only and the host free to run ahead.
- Statistics over independent units, one per iteration (decode: the iteration's median step time): median (p50)
  with its {level:.0%} confidence interval, p10/p90, n and the coefficient of variation (CV = std / mean); decode's
  steps pooled over iterations are in results.csv as step_p10..step_p99. One run: a percentile-bootstrap interval
  ({resamples} resamples, seed {seed}), labelled within-run: it says nothing of a rerun. Several repeats of a
  configuration (`measure.repeats`, column repeats): the median is the geometric mean of the runs' medians and its
  interval comes from a two-level bootstrap (runs, then iterations within each run) with a t quantile over the
  runs, so it includes the run-to-run spread (docs/statistics.md).
- Verdicts: with at least two repeats a side, "faster"/"slower" only when the (1 - alpha) interval of the ratio
  of medians (alpha = {alpha_between} unless --alpha is given) excludes 1 AND the medians differ by at least
  {effect:.0%}; otherwise "within noise". With one run a side: an exact two-sided rank test (ties included) at
  alpha = {alpha}, the {level:.0%} interval excluding 1 and the same minimum effect, and the verdict reads
  "faster within this run": a rerun of the same configuration may land a few per cent away. A pair with fewer
  than {min_n} units on a side or a CV above {max_cv} is "unstable" (no verdict); a run that kept no samples is
  "untested". The speedup and its interval are one estimator; `resolves` is the smallest change the pair could
  have called.
- Configurations (backend + every option that differs from the backend's defaults) are never pooled; a cell
  measured by several runs of one configuration shows the last run given (listed below), never an average.
- Memory: NVML sampled every `measure.memory_interval_ms` in a background thread (device-wide and this process),
  torch's allocator peak, host RSS; energy from NVML's energy counter where supported.
- Machine state per run and per cell: load average, CPU steal, other busy processes, GPU clocks, power,
  temperature, throttle reasons, other GPU processes; cells measured on a machine that was not quiet are listed.
- Roofline: decode bytes per step (all matmul weights + the filled KV cache) / step time, over a device-to-device
  copy bandwidth measured once per run.
- Validation: logits against the HF model in float32 eager on the same inputs (equal-length and left-padded rows).
- Weight-only quantization (`quant`, in the backend label): decode bytes count the stored codes + scales; a
  quantized backend may drift at most 2x what the same scheme costs the float32 HF model (`scheme_max_abs_diff`).
"""


METHOD_DOC = "docs/method.md"  # the method text, once (test_report_text: kept equal to method_text())


def method_text(test_options: dict | None = None) -> str:
    """METHOD with the statistics settings filled in (the defaults unless ``test_options`` says otherwise)."""
    from harness.measure.stats import ALPHA, MAX_CV, MIN_EFFECT, MIN_N, N_RESAMPLES, SEED
    from harness.record.replicated import ALPHA_BETWEEN_RUNS

    given = {k: v for k, v in (test_options or {}).items() if v is not None}
    test = {"alpha": ALPHA, "min_effect": MIN_EFFECT, "min_n": MIN_N, "max_cv": MAX_CV, **given}
    return METHOD.format(level=CONFIDENCE, resamples=N_RESAMPLES, seed=SEED, alpha=test["alpha"],
                         alpha_between=given.get("alpha", ALPHA_BETWEEN_RUNS), effect=test["min_effect"],
                         min_n=test["min_n"], max_cv=test["max_cv"])


def method_section(test_options: dict | None = None) -> str:
    """The report's Method: a link to the method text and the settings this report used."""
    from harness.measure.stats import ALPHA, MAX_CV, MIN_EFFECT, MIN_N, N_RESAMPLES
    from harness.record.replicated import ALPHA_BETWEEN_RUNS

    given = {k: v for k, v in (test_options or {}).items() if v is not None}
    test = {"alpha": ALPHA, "min_effect": MIN_EFFECT, "min_n": MIN_N, "max_cv": MAX_CV, **given}
    between = given.get("alpha", ALPHA_BETWEEN_RUNS)
    return (f"How cells are timed, summarised and judged: [{METHOD_DOC}]({METHOD_DOC}) in the enginebench "
            f"repository. This report: {CONFIDENCE:.0%} bootstrap intervals ({N_RESAMPLES} resamples); verdicts "
            f"at alpha = {test['alpha']} within one run, {between} between repeats, with a minimum effect of "
            f"{test['min_effect']:.0%}; fewer than "
            f"{test['min_n']} iterations or a CV above {test['max_cv']} is unstable (no verdict).\n")


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
        rows.append({"configuration": info.get("_configuration") or cfg.get("backend", {}).get("name"),
                     "device": env.get("gpu_name") or env.get("cpu"),
                     "driver": env.get("gpu_driver", ""), "cuda": env.get("cuda_runtime", ""),
                     "torch": libs.get("torch", ""), "transformers": libs.get("transformers", ""),
                     "onnxruntime": libs.get("onnxruntime-gpu", libs.get("onnxruntime", "")),
                     "commit": (env.get("git_commit") or "")[:12], "weights": info.get("weights")})
    return markdown_table(pd.DataFrame(rows).drop_duplicates()) if rows else "(no run.json found)"


def _fmt(v, spec: str = ".3g") -> str:
    return "" if v is None or (isinstance(v, float) and pd.isna(v)) else format(v, spec)


# what `n` counts in each table: decode statistics pool every step of every iteration; prefill has one per iteration
N_COLUMN = {"decode_ms": "n (iterations; decode steps in runs before per-iteration units)",
            "prefill_ms": "n (iterations)"}


def qualified_verdict(row: dict, short: str, b: str, baseline: str) -> str:
    """The verdict, never bare beside a reason to doubt it: a side measured on a busy machine, or a spread (CV)
    above the test's limit in the statistics shown (the test itself judges per-iteration values)."""
    from harness.measure.stats import MAX_CV

    verdict = str(row[f"{short}_verdict__{b}"])
    doubts = []
    if any(str(row.get(f"machine_warnings__{c}") or "") not in ("", "nan") for c in (b, baseline)):
        doubts.append("noisy machine")
    cvs = [row.get(f"{short}_cv__{c}") for c in (b, baseline)]
    if verdict != "unstable" and any(cv is not None and not pd.isna(cv) and cv > MAX_CV for cv in cvs):
        doubts.append(f"CV above {MAX_CV:.0%}")
    return f"{verdict} ({', '.join(doubts)})" if doubts else verdict


def _config_row(row: dict, short: str, b: str, baseline: str | None) -> dict:
    """One configuration in one cell: median [CI], n, CV, and the speedup over the baseline with its verdict."""
    p50 = row.get(f"{short}_p50__{b}")
    out = {"batch": row["batch_size"], "prompt": row["prompt_len"], "configuration": b}
    if p50 is None or pd.isna(p50):
        out["median"] = str(row.get(f"status__{b}", ""))
        return out
    low, high = row.get(f"{short}_p50_ci_low__{b}"), row.get(f"{short}_p50_ci_high__{b}")
    out["median"] = _fmt(p50) + (f" [{_fmt(low)}, {_fmt(high)}]" if _fmt(low) else "")
    out[N_COLUMN[short]] = _fmt(row.get(f"{short}_n__{b}"), ".0f")
    runs = row.get(f"{short}_repeats__{b}")
    out["runs"] = "1 (interval within run)" if not _fmt(runs) or runs <= 1 else _fmt(runs, ".0f")
    cv = row.get(f"{short}_cv__{b}")
    out["CV"] = f"{cv:.0%}" if _fmt(cv) else ""
    if baseline and b != baseline and row.get(f"{short}_verdict__{b}"):
        low, high = row.get(f"{short}_speedup_ci_low__{b}"), row.get(f"{short}_speedup_ci_high__{b}")
        out["speedup vs baseline"] = _fmt(row[f"{short}_speedup__{b}"], ".2f") + "x" + (
            f" [{_fmt(low, '.2f')}, {_fmt(high, '.2f')}]" if _fmt(low) else "")
        out["verdict"] = qualified_verdict(row, short, b, baseline)
        details = []
        if row.get(f"{short}_n_tested__{b}"):
            details.append(f"iterations {row[f'{short}_n_tested__{b}']}")
        if _fmt(row.get(f"{short}_p_value__{b}")):
            details.append(f"p={row[f'{short}_p_value__{b}']:.2g}")
        if _fmt(row.get(f"{short}_resolves__{b}")):
            details.append(f"resolves changes >= {row[f'{short}_resolves__{b}']:.1%}")
        if row.get(f"{short}_why_no_verdict__{b}"):
            details.append(str(row[f"{short}_why_no_verdict__{b}"]))
        out["test"] = "; ".join(details)
    elif b == baseline:
        out["speedup vs baseline"] = "(baseline)"
    return out


def results_tables(comparison: pd.DataFrame, backends: list[str], baseline: str | None) -> list[str]:
    """Per model/dtype/device and metric, one row per cell and configuration: median [CI] n CV, and the speedup
    over the baseline with its interval, verdict and test."""
    parts = []
    for keys, group in comparison.groupby(["model", "dtype", "device"]):
        parts += [f"### {keys[0]}, {keys[1]}, {keys[2]}", ""]
        for short, title in (("decode_ms", "Decode step latency (ms)"), ("prefill_ms", "Prefill latency (ms)")):
            rows = [_config_row(row, short, b, baseline) for row in group.to_dict("records") for b in backends]
            table = pd.DataFrame(rows).fillna("")
            parts += [f"{title}, median [{CONFIDENCE:.0%} CI]:", "", markdown_table(table), ""]
    return parts


def conditions_section(tidy: pd.DataFrame, infos: list[dict]) -> list[str]:
    """Runs and cells measured while the machine was not quiet (from run.json and the machine_warnings column)."""
    from harness.measure.machine_state import warnings_for

    lines = []
    for info in infos:
        state = info.get("machine_state", {})
        found = sorted({w for s in state.values() if isinstance(s, dict) for w in warnings_for(s)})
        if found:
            lines.append(f"- run {info.get('_dir', '?')} ({info.get('_configuration')}): {'; '.join(found)}")
    if "machine_warnings" in tidy.columns:
        noisy = tidy[tidy.machine_warnings.astype(object).fillna("") != ""].drop_duplicates(CELL + ["backend"])
        for row in noisy.itertuples(index=False):
            lines.append(f"- {row.backend} b={row.batch_size} p={row.prompt_len}: {row.machine_warnings}")
    if not lines:
        recorded = any(info.get("machine_state") for info in infos) or "machine_warnings" in tidy.columns
        return ["No warnings: the machine was quiet during every cell." if recorded else
                "These results predate machine-state capture: nothing is known about machine load."]
    return ["Measured while the machine was not quiet (treat these numbers with care):", "", *lines]


def uneven_decode_cells(tidy: pd.DataFrame) -> list[str]:
    """One line per (configuration, cell) whose decode steps spread beyond ``UNEVEN_P90_OVER_P10``."""
    from harness.measure import metrics
    from harness.report.aggregate import latest_per_cell

    decode = latest_per_cell(tidy[(tidy.metric == metrics.DECODE_LATENCY) & (tidy.status == "ok")])
    if "step_p10" in decode.columns:  # the steps' own percentiles; older results had them as p10/p50/p90
        steps = decode[["step_p10", "step_p50", "step_p90"]].set_axis(["p10", "p50", "p90"], axis=1)
        decode = decode.drop(columns=["p10", "p50", "p90"]).join(steps.fillna(decode[["p10", "p50", "p90"]]))
    uneven = decode[decode.p90 >= UNEVEN_P90_OVER_P10 * decode.p10]
    return [f"- {r.backend} b={r.batch_size} p={r.prompt_len}: p10 {r.p10:.3g} ms, p50 {r.p50:.3g} ms, "
            f"p90 {r.p90:.3g} ms" for r in uneven.itertuples(index=False)]


def write_report(path: Path, tidy: pd.DataFrame, comparison: pd.DataFrame, infos: list[dict],
                 validation: pd.DataFrame, plots: list[Path], baseline: str | None, sources: list[str],
                 repeated: pd.DataFrame | None = None, test_options: dict | None = None,
                 speed_accuracy: pd.DataFrame | None = None, where_time_goes: list[str] | None = None) -> None:
    from harness.report.host_bound import host_bound_cells
    from harness.report.repeats import repeat_order
    from harness.report.speed_accuracy import markdown_section
    from harness.report.walltime import wall_time_lines

    method = method_section({k: v for k, v in (test_options or {}).items() if v is not None})
    parts = ["# enginebench report", "", f"Inputs: {', '.join(sources)}", "", "## Environment", "",
             environment_section(infos), "", "## Method", "", method, "## Results", ""]
    backends = sorted(tidy.backend.unique())
    parts += [f"Baseline: `{baseline}`." if baseline else
              "No baseline among these configurations: no speedups (give --baseline NAME).", ""]
    parts += repeat_order(infos) or ["Every configuration ran once (measure.repeats=1): each verdict rests on one run "
                                     "per side and holds within those runs only.", ""]
    parts += results_tables(comparison, backends, baseline)
    if repeated is not None and len(repeated):
        parts += ["### Cells measured by more than one run of a configuration", "",
                  "Shown above: the last run given; the runs are not averaged.", "",
                  markdown_table(repeated[["backend", "batch_size", "prompt_len", "runs", "shown"]]), ""]
    failed = tidy[tidy.status != "ok"].drop_duplicates(CELL + ["backend"])
    if len(failed):
        parts += ["### Cells that did not produce measurements", "",
                  markdown_table(failed[["backend", "batch_size", "prompt_len", "status", "error"]]), ""]
    if speed_accuracy is not None:
        parts += markdown_section(speed_accuracy, markdown_table)
    parts += where_time_goes or []  # harness/report/where_time_goes.py
    parts += ["## Measurement conditions", "", *conditions_section(tidy, infos), ""]
    parts += wall_time_lines(infos)
    uneven = uneven_decode_cells(tidy)
    if uneven:
        parts += ["Cells whose decode steps ran at more than one speed (p90 at least "
                  f"{UNEVEN_P90_OVER_P10}x the p10): their median may describe neither speed; the steps are in each "
                  "run's samples/.", "", *uneven, ""]
    host_bound = host_bound_cells(tidy)
    if host_bound:
        parts += ["Host-bound cells (`host_bound` in results.csv): the time a user waits per token exceeds the "
                  "device's time of the step by more than 10 %.", "", *host_bound, ""]
    if plots:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(path.parent)})" for p in plots] + [""]
    parts += ["## Validation", ""]
    if len(validation):
        cols = [c for c in ["backend", "dtype", "quant", "device", "case", "max_abs_diff", "mean_abs_diff",
                            "kl_divergence", "top1_agreement", "greedy_agreement", "scheme_max_abs_diff",
                            "tolerance", "passed", "reason"] if c in validation]
        parts += [markdown_table(validation[cols]), ""]
    else:
        parts += ["No validation results in these inputs.", ""]
    caveats = ["- Speed depends on the architecture, not the weights; generated text from random weights is not "
               "meaningful, and with nearly flat random logits half-precision argmax flips between near-ties "
               "(validation gates half precision on |Δlogit|)."] if (tidy.weights == "random").any() else []
    caveats.append("- TensorRT backends can only execute where TensorRT supports the GPU; cells a backend did not "
                   "run are listed with their status above, never left blank.")
    parts += ["## Caveats", "", *caveats, ""]
    atomic_write_text(path, "\n".join(parts))
