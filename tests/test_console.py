"""What a user reads on the console: library warnings counted instead of printed, one line per cell when stderr is
not a terminal, the end-of-job summary in 100 columns with intervals and flags, compare's readable table, multirun
job names, "did you mean" for shortened backend names, and enginebench-report --version. All in-process, on result
directories written with the harness's own writers (test_verdicts.make_run)."""
import logging
import warnings

import pandas as pd
import pytest
from test_verdicts import make_run

from harness import progress
from harness.config import jobname
from harness.record.summary import print_job_summary, summary_table
from harness.run import console


def test_library_warnings_are_counted_not_printed(monkeypatch, capsys):
    monkeypatch.delenv("ENGINEBENCH_VERBOSE", raising=False)
    monkeypatch.setattr(console, "hidden", console.hidden.__class__())
    saved_show, saved_filters = warnings.showwarning, warnings.filters[:]
    logger = logging.getLogger("transformers")
    saved_handlers, saved_propagate = logger.handlers[:], logger.propagate
    try:
        console.quiet()
        warnings.warn("`past_key_values` is deprecated", FutureWarning, stacklevel=1)
        logger.warning("a library's own warning")
        assert capsys.readouterr().err == ""
        assert sum(console.hidden.values()) == 2
        assert "2 library warning(s)" in console.hidden_line() and "--verbose" in console.hidden_line()
    finally:
        warnings.showwarning, warnings.filters[:] = saved_show, saved_filters
        logger.handlers[:], logger.propagate = saved_handlers, saved_propagate


def test_verbose_keeps_warnings(monkeypatch):
    monkeypatch.setenv("ENGINEBENCH_VERBOSE", "1")
    saved = warnings.showwarning
    console.quiet()
    assert warnings.showwarning is saved and console.hidden_line() is None


def test_cells_are_single_lines_without_a_terminal(capsys):
    with progress.cells(2, "hf") as bar:  # pytest's stderr is not a terminal
        bar.describe("hf b=1 p=8")
        bar.advance("ok")
        bar.describe("hf b=2 p=8")
        bar.advance("oom")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("cell 1/2 hf b=1 p=8: ok") and "left" in err[0]
    assert "cell 2/2 hf b=2 p=8: oom" in err[-1] and "\r" not in "".join(err)


def test_phase_says_the_last_duration(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENGINEBENCH_CACHE_DIR", str(tmp_path))
    progress._remember("load x", 171.0)
    with progress.phase("loading x", "load x"):
        pass
    assert "loading x ... (about 3 min, as last time)" in capsys.readouterr().err


def _noisy_run(tmp_path):
    run = make_run(tmp_path / "r", "onnxruntime", {(1, 8): 2.0, (4, 8): 5.0, (8, 8): "oom"})
    results = pd.read_csv(run / "results.csv", dtype=str, keep_default_na=False)
    results.loc[results.batch_size == "4", "machine_warnings"] = "load average 8.4 on 2 cores"
    results.to_csv(run / "results.csv", index=False)
    return run


def test_summary_fits_100_columns_with_interval_and_flags(tmp_path, capsys):
    run = _noisy_run(tmp_path)
    print_job_summary(run / "results.csv")
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100, out
    assert "decode ms [95% CI]" in out and "noisy machine" in out and "oom" in out
    assert "warning: machine not quiet during 1 of 3 cells (load average 8.4 on 2 cores)" in out
    tidy = pd.read_csv(run / "results.csv")
    row = summary_table(tidy).set_index("b").loc[1]
    assert row["decode ms [95% CI]"].startswith("2.0") and "[" in row["decode ms [95% CI]"]


def test_summary_flags_two_speeds_and_unstable():
    tidy = pd.DataFrame([
        {"backend": "x", "model": "m", "dtype": "float16", "device": "cuda", "batch_size": 1, "prompt_len": 8,
         "status": "ok", "iterations": 3, "machine_warnings": "", "metric": "decode_latency_ms",
         "p10": 1.0, "p50": 1.1, "p90": 2.0, "cv": 0.4, "p50_ci_low": 1.0, "p50_ci_high": 1.3},
        {"backend": "x", "model": "m", "dtype": "float16", "device": "cuda", "batch_size": 1, "prompt_len": 8,
         "status": "ok", "iterations": 3, "machine_warnings": "", "metric": "prefill_latency_ms",
         "p10": 2.0, "p50": 2.1, "p90": 2.2, "cv": 0.05, "p50_ci_low": 2.0, "p50_ci_high": 2.2}])
    tidy["host_bound"] = "decode"  # the harness's own test (harness/measure/instrument.py), written on every row
    assert summary_table(tidy)["flags"].iloc[0] == "host-bound, two speeds, unstable"


def test_compare_prints_a_readable_table(tmp_path):
    from harness.report.aggregate import load_results
    from harness.report.compare_table import machine_line, render
    from harness.report.regression import compare_runs

    old = make_run(tmp_path / "old", "hf", {(1, 8): 2.0, (2, 8): 2.0})
    new = make_run(tmp_path / "new", "hf", {(1, 8): 3.0, (2, 8): 2.0})
    a, b = load_results([str(old)]), load_results([str(new)])
    table = compare_runs(a, b)
    text = render(table)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert "+50.0%" in text or "+4" in text  # the change in per cent, not a fraction
    assert "regression" in text and "decode" in text
    assert "change_ci_low" in render(table, wide=True)
    assert machine_line(a, b) is None
    noisy = b.assign(machine_warnings="load average 8.4 on 2 cores")
    assert "OLD, 2 of NEW" in machine_line(a, noisy)


def test_multirun_job_names(monkeypatch):
    monkeypatch.setenv(jobname.SWEPT_ENV, "model,backend.attention")
    label = jobname.job_label({"name": "onnxruntime", "attention": "gqa"},
                              ["backend=onnxruntime", "backend.attention=gqa", "model=smollm2-135m", "seed=3"])
    assert label.startswith("onnxruntime") and label.endswith(" model=smollm2-135m")
    assert "seed" not in label  # not swept: the same in every job
    assert jobname.dir_name("fault[crash_at=['2x8']] model=a/b") == "fault[crash_at=[2x8]],model=a_b"


def test_shortened_backend_name_gets_did_you_mean():
    from harness.config.compose import closest_name

    assert closest_name("onnx", ["hf-flashattn-staticcache", "onnxruntime", "trt-handbuilt"]) == "onnxruntime"
    assert closest_name("hf", ["hf-flashattn-staticcache", "onnxruntime"]) == "hf-flashattn-staticcache"


def test_report_version(capsys):
    from harness.report.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("enginebench ")


@pytest.mark.slow
def test_help_lists_tasks_examples_results_and_docs():
    from helpers import run_cli

    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for text in ("Tasks (task=...)", "chat", "Examples:", "enginebench-report compare", "Results:", "docs/cli.md",
                 "backend: hf-flashattn-staticcache, onnxruntime"):
        assert text in proc.stdout, text
    assert "powered by Hydra" not in proc.stdout
    assert sum(line.lstrip().startswith("enginebench") for line in proc.stdout.splitlines()) >= 10


def test_a_fast_test_may_not_start_the_command_line(monkeypatch):
    from helpers import SLOW_TESTS, run_cli

    assert SLOW_TESTS, "conftest.py records the slow tests at collection"
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_console.py::not_a_slow_test (call)")
    with pytest.raises(AssertionError, match="mark it @pytest.mark.slow"):
        run_cli("--version")


def test_summary_keeps_100_columns_with_every_flag_wide_intervals_and_a_long_warning(tmp_path, capsys):
    """The worst case: all four flags, intervals of five-digit numbers and a long machine warning. The throughput
    column goes, then the flags leave the table for a line per cell; no line is cut, none is wider than 100."""
    from harness.record.summary import render

    row = {"backend": "a-backend-with-a-long-name", "model": "/some/long/checkpoint/directory/of/a/model",
           "dtype": "bfloat16", "device": "cpu", "batch_size": 128, "prompt_len": 16384, "status": "ok",
           "iterations": 3, "machine_warnings": "load average 13.7 on 2 cores; steal 12 %; other GPU processes",
           "host_bound": "decode", "weights": "random", "new_tokens": 64}
    stats = {"p10": 1.0, "p50": 12345.6, "p90": 99999.0, "cv": 0.9, "p50_ci_low": 10000.1, "p50_ci_high": 23456.7}
    tidy = pd.DataFrame([{**row, "metric": m, **stats} for m in ("decode_latency_ms", "prefill_latency_ms",
                                                                  "decode_throughput_tok_s")])
    table = summary_table(tidy)
    assert table["flags"].iloc[0] == "noisy machine, host-bound, two speeds, unstable"
    text = render(table)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert "b=128 prompt=16384: noisy machine, host-bound, two speeds, unstable" in text
    run = tmp_path / "r"
    run.mkdir()
    tidy.to_csv(run / "results.csv", index=False)
    print_job_summary(run / "results.csv")
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100, out
    assert "numbers may be off" in out and "two speeds: decode steps ran at two speeds" in out
