"""Verdicts a reader can trust: the two-sample test on synthetic sample sets, bootstrap intervals, and the report
and compare commands on result directories written with the harness's own writers (synthetic timings, real files):
zero-match compare, a missing baseline, configurations never pooled, failed configurations marked."""
import json
import subprocess
import sys
import zlib

import numpy as np
import pandas as pd
import pytest

from harness.measure.stats import compare_samples, median_ci, relative_ci_half_width, summarize
from harness.record.results import ResultsWriter, rows_for_cell
from harness.record.runrecord import write_run as write_run_json
from harness.record.samples import read_cell_samples, write_cell_samples
from helpers import ROOT, run_report_cli


def _rng(seed):
    return np.random.default_rng(seed)


# ---- the test itself, on synthetic sample sets -------------------------------------------------------------

def test_clearly_different_sample_sets_get_a_verdict():
    a = _rng(1).normal(10.0, 0.3, 30)
    b = _rng(2).normal(12.0, 0.36, 30)  # 20 % slower, spread 3 %
    v = compare_samples(a, b)
    assert v.verdict == "higher" and v.p_value < 1e-6 and v.scope == "within run"
    assert v.ratio_ci_low < 1.2 < v.ratio_ci_high and v.ratio_ci_low > 1.1
    assert compare_samples(b, a).verdict == "lower"


def test_same_distribution_is_within_noise():
    a = _rng(3).normal(10.0, 0.5, 40)
    b = _rng(4).normal(10.0, 0.5, 40)
    v = compare_samples(a, b)
    assert v.verdict == "within noise" and v.ratio_ci_low < 1.0 < v.ratio_ci_high


def test_significant_but_tiny_change_is_within_noise():
    a = _rng(5).normal(10.0, 0.05, 2000)
    b = _rng(6).normal(10.2, 0.05, 2000)  # 2 %: p is tiny, the effect below the 5 % minimum
    v = compare_samples(a, b)
    assert v.p_value < 1e-10 and v.verdict == "within noise"
    assert compare_samples(a, b, min_effect=0.01).verdict == "higher"


def test_too_few_or_too_noisy_samples_are_unstable():
    few = compare_samples([1.0, 1.1, 0.9], [5.0, 5.1, 4.9])
    assert few.verdict == "unstable" and "n=3" in few.reason
    noisy = compare_samples(_rng(7).lognormal(0, 1.0, 50), _rng(8).lognormal(1, 1.0, 50))
    assert noisy.verdict == "unstable" and "CV" in noisy.reason


def test_median_interval_is_seeded_and_covers_the_median():
    x = _rng(9).normal(5.0, 1.0, 200)
    assert median_ci(x) == median_ci(x)  # same samples, same interval
    low, high = median_ci(x)
    assert low < np.median(x) < high and low < 5.0 < high
    s = summarize(x)
    assert (s["p50_ci_low"], s["p50_ci_high"]) == (low, high)
    assert s["cv"] == pytest.approx(x.std(ddof=1) / x.mean())
    assert relative_ci_half_width(x) == pytest.approx((high - low) / 2 / np.median(x))
    assert summarize([3.0, 3.0])["p50_ci_low"] == 3.0


# ---- result directories written with the harness's writers -------------------------------------------------

CELL_DEFAULTS = {"model": "tiny-llama", "weights": "random", "dtype": "float32", "device": "cpu", "new_tokens": 4}


def make_run(run_dir, backend, cells, options=None, defaults=None, host="box-a", torch_version="2.13.0"):
    """A run directory as the harness writes it: results.csv, summary.csv, run.json and samples/.

    ``cells``: {(batch, prompt_len): decode step median in ms, or a failure status string}."""
    run_dir.mkdir(parents=True)
    writer = ResultsWriter(run_dir)
    rng = _rng(zlib.crc32(f"{backend}{run_dir.name}".encode()))
    for (batch, prompt), value in cells.items():
        identity = {"backend": backend, **CELL_DEFAULTS, "batch_size": batch, "prompt_len": prompt}
        if isinstance(value, str):
            writer.append_cell(rows_for_cell(identity, [], status=value, error="RuntimeError: injected",
                                             iterations=0))
            continue
        decode = rng.normal(value, value * 0.02, (12, 4))
        prefill = rng.normal(value * 3, value * 0.06, 12)
        e2e = prefill + decode.sum(axis=1)
        write_cell_samples(run_dir, identity, prefill, decode, e2e, {"load_avg_1m": 0.1, "cpu_count": 2})
        metrics = [("prefill_latency_ms", "ms", summarize(prefill)),
                   ("decode_latency_ms", "ms", summarize(decode.ravel())), ("e2e_latency_ms", "ms", summarize(e2e))]
        writer.append_cell(rows_for_cell(identity, metrics, status="ok", error="", iterations=12,
                                         machine_warnings=""))
    write_run_json(run_dir, {"config": {"backend": {"name": backend, **(options or {})}},
                             "backend_defaults": defaults or {},
                             "environment": {"hostname": host, "cpu": "test cpu",
                                             "libraries": {"torch": torch_version}}})
    return run_dir


def _report(*args):
    return run_report_cli(*args)


def test_samples_file_round_trip(tmp_path):
    make_run(tmp_path / "r", "x", {(1, 8): 2.0})
    s = read_cell_samples(tmp_path / "r", 1, 8, 4)
    assert s["decode_ms"].shape == (12, 4) and s["meta"]["identity"]["backend"] == "x"
    assert (tmp_path / "r" / "samples" / "b1_p8_n4.npz").stat().st_mode & 0o044  # readable by others (umask)
    assert (tmp_path / "r" / "results.csv").stat().st_mode & 0o044


def test_report_verdicts_from_samples_and_baseline_errors(tmp_path):
    base = make_run(tmp_path / "base", "hf", {(1, 8): 2.0, (2, 8): 2.0})
    fast = make_run(tmp_path / "fast", "ort", {(1, 8): 1.0, (2, 8): 2.0}, options={"attention": "gqa"},
                    defaults={"attention": "explicit"})
    from harness.report.cli import build_report

    written = build_report([str(base), str(fast)], tmp_path / "rep", baseline="hf", plots=False)
    comp = pd.read_csv(written["comparison"]).set_index("batch_size")
    col = "decode_ms_verdict__ort[attention=gqa]"
    assert comp.loc[1, col] == "faster within this run" and comp.loc[2, col] == "within noise"
    assert comp.loc[1, "decode_ms_speedup_ci_low__ort[attention=gqa]"] > 1.5
    text = written["report"].read_text()
    assert "| faster within this run | iterations 12 vs 12; p=" in text and "median [95% CI]" in text
    assert "n (iterations; decode steps" in text and "n (iterations)" in text  # one meaning of n per column
    assert "| 1 | 8 | hf | 2" in text and "| 48 |" in text  # median [CI] and n of every compared number
    # a baseline that is not there: one line, naming what is there, exit 2
    proc = _report(base, fast, "--baseline", "hf-typo", "--out", tmp_path / "rep2", "--no-plots")
    assert proc.returncode == 2 and "hf-typo" in proc.stderr and "ort[attention=gqa]" in proc.stderr
    assert "did you mean --baseline 'hf'" in proc.stderr


def test_report_without_baseline_says_so(tmp_path):
    run = make_run(tmp_path / "a", "ort", {(1, 8): 1.0})
    from harness.report.cli import build_report

    written = build_report([str(run)], tmp_path / "rep", plots=False)
    assert "No baseline among these configurations" in written["report"].read_text()


def test_configurations_are_never_pooled(tmp_path):
    runs = [make_run(tmp_path / "gqa", "ort", {(1, 8): 1.0}, {"attention": "gqa"}, {"attention": "explicit"}),
            make_run(tmp_path / "exp", "ort", {(1, 8): 3.0}, {"attention": "explicit"}, {"attention": "explicit"}),
            make_run(tmp_path / "ro1", "hf", {(1, 8): 2.0}), make_run(tmp_path / "ro2", "hf", {(1, 8): 2.5})]
    from harness.report.aggregate import (
        configuration_pivot,
        load_results,
        repeated_cells,
    )
    from harness.report.comparison import comparison_table

    tidy = load_results([str(r) for r in runs])
    assert sorted(tidy.backend.unique()) == ["hf", "ort", "ort[attention=gqa]"]
    table = configuration_pivot(tidy, "decode_latency_ms")
    assert sorted(table.columns) == ["hf @ ro1", "hf @ ro2", "ort", "ort[attention=gqa]"]
    assert len(repeated_cells(tidy)) == 1  # hf's cell in two runs: shown once, listed
    comp = comparison_table(tidy, "hf")
    assert comp["decode_ms_p50__hf"].iloc[0] == pytest.approx(tidy[tidy.source.str.contains("ro2") &
                                                                   (tidy.metric == "decode_latency_ms")].p50.iloc[0])


def test_notebook_gpu_table_does_not_pool_configurations():
    """The committed H100 results the notebook tabulates: one column per configuration and run."""
    from harness.report.aggregate import configuration_pivot, load_results

    tidy = load_results([str(ROOT / "docs" / "results" / "h100")])
    table = configuration_pivot(tidy, "decode_latency_ms")
    ort = [c for c in table.columns if c.startswith("onnxruntime")]
    hf = [c for c in table.columns if c.startswith("hf-flashattn-staticcache")]
    assert len(ort) >= 6 and len(set(ort)) == len(ort)
    assert len(hf) >= 3  # compile=none and three reduce-overhead runs, side by side
    nb = json.loads((ROOT / "notebooks" / "benchmark.ipynb").read_text())
    source = "".join("".join(c["source"]) for c in nb["cells"])
    assert "configuration_pivot" in source and "pivot_table" not in source


def test_compare_zero_match_is_an_error(tmp_path):
    a = make_run(tmp_path / "a", "hf", {(1, 8): 2.0})
    b = make_run(tmp_path / "b", "ort", {(1, 8): 2.0})
    proc = _report("compare", a, b, "--fail-on-regression")
    assert proc.returncode == 2 and "no cell in common" in proc.stderr
    assert "OLD has hf" in proc.stderr and "NEW has ort" in proc.stderr


def test_compare_flags_regression_by_test_and_warns_on_machines(tmp_path):
    old = make_run(tmp_path / "old", "hf", {(1, 8): 2.0, (2, 8): 2.0, (4, 8): 2.0})
    new = make_run(tmp_path / "new", "hf", {(1, 8): 3.0, (2, 8): 2.0, (4, 8): "error"}, host="box-b",
                   torch_version="2.11.0")
    from harness.report.aggregate import load_results
    from harness.report.regression import compare_runs

    table = compare_runs(load_results([str(old)]), load_results([str(new)]))
    decode = table[table.metric == "decode_latency_ms"].set_index("batch_size")
    assert decode.loc[1, "verdict"] == "regression within this run" and decode.loc[2, "verdict"] == "within noise"
    assert decode.loc[4, "verdict"] == "error in new"
    plain = _report("compare", old, new)
    assert plain.returncode == 0 and "regression" in plain.stdout
    assert "host: OLD box-a vs NEW box-b" in plain.stderr and "torch: OLD 2.13.0 vs NEW 2.11.0" in plain.stderr
    assert _report("compare", old, new, "--fail-on-regression").returncode == 1
    same = _report("compare", old, old, "--fail-on-regression")
    assert same.returncode == 0 and "within noise" in same.stdout


def test_compare_without_samples_is_untested(tmp_path):
    old = make_run(tmp_path / "old", "hf", {(1, 8): 2.0})
    new = make_run(tmp_path / "new", "hf", {(1, 8): 3.0})
    for f in (new / "samples").iterdir():
        f.unlink()
    from harness.report.aggregate import load_results
    from harness.report.regression import compare_runs

    table = compare_runs(load_results([str(old)]), load_results([str(new)]))
    assert set(table.verdict) == {"untested"} and "NEW" in table.why_no_verdict.iloc[0]


def test_report_help_lists_compare():
    proc = _report("--help")
    assert proc.returncode == 0 and "compare OLD NEW" in proc.stdout


def test_plots_mark_failed_configurations(tmp_path):
    runs = [make_run(tmp_path / "a", "hf", {(1, 8): 2.0, (2, 8): 2.5}),
            make_run(tmp_path / "b", "ort", {(1, 8): 1.0, (2, 8): "oom"}),
            make_run(tmp_path / "c", "trt", {(1, 8): "load_failed", (2, 8): "load_failed"})]
    import matplotlib.pyplot as plt

    from harness.report.aggregate import load_results
    from harness.report.plots import make_plots

    captured = {}
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):  # read the figure as drawn, then save it for real
        captured[str(args[0])] = fig
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        written = make_plots(load_results([str(r) for r in runs]), tmp_path / "plots")
    finally:
        plt.Figure.savefig = original
    decode = next(p for p in written if p.name.startswith("decode_latency_vs_batch"))
    fig = captured[str(decode)]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "shaded band: p10-p90 of the samples" in labels
    assert "ort: oom (x on the axis)" in labels and "trt: load_failed (x on the axis)" in labels
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0
    assert not ax.get_legend()  # the legend is the figure's, outside the axes


# ---- machine state -------------------------------------------------------------------------------------------

def test_machine_warnings_name_what_was_not_quiet():
    from harness.measure.machine_state import warnings_for

    assert warnings_for({"load_avg_1m": 0.3, "cpu_count": 2, "steal_frac": 0.0, "busy_processes": []}) == []
    found = warnings_for({"load_avg_1m": 5.2, "cpu_count": 2, "steal_frac": 0.08, "busy_processes": ["cc1(42) 95%"],
                          "gpu_throttle_reasons": ["sw_power_cap"], "gpu_thermal_violation_ms": 120.0,
                          "gpu_temperature_c": 88, "gpu_other_processes": [1234], "gpu_persistence_mode": 0})
    text = " | ".join(found)
    for part in ("load average 5.2 on 2 cores", "CPU steal 8%", "cc1(42) 95%", "GPU throttled: sw_power_cap",
                 "clocked down for thermal 120 ms", "GPU at 88 C", "other processes on the GPU: [1234]",
                 "persistence mode off"):
        assert part in text, part


def test_machine_watch_sees_a_busy_process():
    """A real busy process (a Python spin loop) during the watched interval is named."""
    import time

    from harness.measure.machine_state import MachineWatch

    # started through a shell that exits at once: the spinner is not our child (children count as the benchmark)
    started = subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'import time\nt = time.time()\nwhile time.time() - t"
                              " < 3: pass' >/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
    pid = int(started.stdout.strip())
    time.sleep(0.3)
    with MachineWatch("cpu") as watch:
        time.sleep(1.0)
    assert watch.state["cpu_count"] >= 1 and "load_avg_1m" in watch.state and watch.state["seconds"] >= 1.0
    assert any(f"({pid})" in p for p in watch.state["busy_processes"]), watch.state["busy_processes"]


def test_report_lists_cells_measured_on_a_busy_machine(tmp_path):
    run = make_run(tmp_path / "a", "hf", {(1, 8): 2.0, (2, 8): 2.0})
    tidy = pd.read_csv(run / "results.csv")
    tidy["machine_warnings"] = tidy.machine_warnings.astype(object)
    tidy.loc[tidy.batch_size == 2, "machine_warnings"] = "load average 5.0 on 2 cores"
    tidy.to_csv(run / "results.csv", index=False)
    info = json.loads((run / "run.json").read_text())
    info["machine_state"] = {"start": {"load_avg_1m": 0.1, "cpu_count": 2},
                             "end": {"load_avg_1m": 0.2, "cpu_count": 2, "gpu_throttle_reasons": ["hw_slowdown"]}}
    (run / "run.json").write_text(json.dumps(info))
    from harness.report.cli import build_report

    text = build_report([str(run)], tmp_path / "rep", plots=False)["report"].read_text()
    section = text.split("## Measurement conditions")[1]
    assert "hf b=2 p=8: load average 5.0 on 2 cores" in section and "GPU throttled: hw_slowdown" in section
    assert "hf b=1 p=8" not in section


def test_speed_run_without_validation_takes_accuracy_from_a_validate_run(tmp_path):
    """A speed run made with validation off and a validate-only run of the same configuration (validation.csv and
    run.json, no results.csv) make one speed-vs-accuracy row; another configuration's validation is not borrowed."""
    speed = make_run(tmp_path / "speed", "ort", {(1, 8): 1.0}, options={"attention": "gqa"},
                     defaults={"attention": "explicit"})
    other = make_run(tmp_path / "other", "ort", {(1, 8): 2.0}, options={"attention": "explicit"},
                     defaults={"attention": "explicit"})
    checked = tmp_path / "validate_gqa"
    checked.mkdir()
    write_run_json(checked, {"config": {"backend": {"name": "ort", "attention": "gqa"}},
                             "backend_defaults": {"attention": "explicit"}})
    accuracy = {"accuracy_max_abs_diff": 0.25, "accuracy_mean_abs_diff": 0.04, "accuracy_kl": 0.0014,
                "accuracy_top1": 0.5625, "accuracy_greedy": 0.0625}
    pd.DataFrame([{"backend": "ort", **{k: CELL_DEFAULTS[k] for k in ("model", "dtype", "device")}, "case": case,
                   "max_abs_diff": 0.25, "passed": True, "quant": "none", **accuracy}
                  for case in ("equal_lengths", "left_padded")]).to_csv(checked / "validation.csv", index=False)
    from harness.report.cli import build_report

    written = build_report([str(speed), str(other), str(checked)], tmp_path / "rep", plots=False)
    text = written["report"].read_text()
    section = text.split("## Speed vs accuracy")[1].split("\n## ")[0].splitlines()
    row = next(line for line in section if line.startswith("| ort[attention=gqa] |"))
    assert "| 0.25 | 0.04 | 0.0014 | 0.562 | 0.0625 | validate_gqa |" in row
    explicit = next(line for line in section if line.startswith("| ort |"))  # the defaults: a bare label
    assert "validate_gqa" not in explicit and "0.25" not in explicit
    assert "| ort | float32 | none | cpu | left_padded | 0.25 |" in text  # the Validation table lists it too


def test_report_lists_cells_whose_decode_steps_ran_at_two_speeds(tmp_path):
    """A cell whose steps switch between 2.85 and 5 ms is listed with its p10/p50/p90; a steady cell is not."""
    run = tmp_path / "run"
    run.mkdir()
    writer = ResultsWriter(run)
    rng = _rng(7)
    cells = {1: rng.normal(2.0, 0.02, (12, 32)),  # steady
             8: np.concatenate([rng.normal(2.85, 0.01, (12, 13)), rng.normal(5.0, 0.2, (12, 19))], axis=1)}
    for batch, decode in cells.items():
        identity = {"backend": "hf", **CELL_DEFAULTS, "batch_size": batch, "prompt_len": 128}
        prefill = rng.normal(20.0, 0.2, 12)
        metrics = [("prefill_latency_ms", "ms", summarize(prefill)),
                   ("decode_latency_ms", "ms", summarize(decode.ravel())),
                   ("e2e_latency_ms", "ms", summarize(prefill + decode.sum(axis=1)))]
        writer.append_cell(rows_for_cell(identity, metrics, status="ok", error="", iterations=12, machine_warnings=""))
    write_run_json(run, {"config": {"backend": {"name": "hf"}}, "backend_defaults": {}})
    from harness.report.cli import build_report

    text = build_report([str(run)], tmp_path / "rep", plots=False)["report"].read_text()
    section = text.split("## Measurement conditions")[1].split("\n## ")[0]
    assert "decode steps ran at more than one speed" in section
    listed = [line for line in section.splitlines() if line.startswith("- hf ")]
    assert len(listed) == 1 and listed[0].startswith("- hf b=8 p=128: p10 2.8")
