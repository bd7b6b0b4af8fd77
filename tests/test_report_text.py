"""The report's text: the method once (docs/method.md, linked from every report with the settings it used), and a
verdict never shown bare beside a reason to doubt it (a busy machine, a spread above the test's limit)."""
import pandas as pd
import pytest

from harness.report.markdown import METHOD_DOC, method_section, method_text, qualified_verdict
from helpers import ROOT


def test_method_doc_is_the_method_text():
    doc = (ROOT / METHOD_DOC).read_text()
    assert doc.endswith(method_text()), (
        "docs/method.md is out of date: regenerate its list from harness.report.markdown.method_text()")
    assert METHOD_DOC in method_section() and "alpha = 0.02" in method_section({"alpha": 0.02})


def _row(**extra):
    return {"decode_ms_verdict__ort": "faster", "decode_ms_cv__ort": 0.05, "decode_ms_cv__hf": 0.04,
            "machine_warnings__ort": "", "machine_warnings__hf": float("nan"), **extra}


def test_verdicts_carry_their_doubts():
    assert qualified_verdict(_row(), "decode_ms", "ort", "hf") == "faster"
    noisy = _row(machine_warnings__hf="load average 8.4 on 2 cores")
    assert qualified_verdict(noisy, "decode_ms", "ort", "hf") == "faster (noisy machine)"
    spread = _row(decode_ms_cv__ort=1.5)
    assert qualified_verdict(spread, "decode_ms", "ort", "hf") == "faster (CV above 25%)"
    unstable = _row(decode_ms_verdict__ort="unstable", decode_ms_cv__ort=1.5)
    assert qualified_verdict(unstable, "decode_ms", "ort", "hf") == "unstable"
    assert pd.isna(_row()["machine_warnings__hf"])


def test_plots_choose_log_axes_and_keep_colours(tmp_path):
    from harness.report.plots import config_colors, wide_span
    from harness.report.speed_accuracy import speed_accuracy_plot

    assert wide_span([0.3, 300.0]) and not wide_span([20.0, 150.0])
    assert config_colors(["ort", "hf"]) == config_colors(["hf", "ort", "hf"]) == {"hf": "C0", "ort": "C1"}
    table = pd.DataFrame([
        {"model": "m", "weights": "random", "dtype": "float32", "device": "cpu", "backend": name, "batch_size": 1,
         "prompt_len": 16, "decode_ms_p50": ms, "accuracy_kl": kl, "accuracy_max_abs_diff": diff}
        for name, ms, kl, diff in (("hf", 80.0, 0.0, 0.0), ("ort", 2.0, 7e-8, 2e-7))])
    (png,) = speed_accuracy_plot(table, tmp_path, config_colors(["hf", "ort"]))
    assert png.stat().st_size > 10_000


def test_plots_module_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = ("import harness.report.plots; "
            "import harness.report.speed_accuracy; assert 'matplotlib.pyplot' not in __import__('sys').modules; "
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_log_axes_label_their_points_even_within_one_decade():
    from matplotlib.figure import Figure

    from harness.report.plots import log_ticks
    from harness.report.speed_accuracy import label_log_x

    assert log_ticks(1e-4, 1e-1) == [1e-4, 1e-3, 1e-2, 1e-1]
    # inside one decade 1-2-5 gives one tick (0.2), so the finer steps
    assert log_ticks(0.11, 0.45) == pytest.approx([0.15, 0.2, 0.3])
    for values, zero in (([1.1e-4, 3.2e-4], False), ([0.28, 0.29], False), ([0.0, 7e-8], True),
                         ([2e-9, 5e-2], False)):
        ax = Figure().subplots()
        series = pd.Series(values)
        ax.scatter(series.where(series > 0, label_log_x(ax, series)), [1.0] * len(values))
        left, right = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if left <= t <= right]
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(ticks) >= 2 and all(labels), (values, ticks, labels)
        assert left < min(v for v in values if v > 0) and right > max(values)
        assert (labels[0] == "0 (exact)") == zero
    from harness.report.plots import label_log_y

    ax = Figure().subplots()
    ax.plot([1, 2], [2.0, 80.0])
    label_log_y(ax)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["2", "5", "10", "20", "50"]  # plain numbers on the ticks, none written as 2x10^0
