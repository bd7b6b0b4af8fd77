"""Statistics on hand-derived samples, the CSV schema, atomic files and torn-cell recovery."""
import math

import pandas as pd

from harness.measure.stats import summarize
from harness.record.results import ROW_COLUMNS, ResultsWriter, read_complete_rows, rows_for_cell


def test_summarize_hand_values():
    s = summarize([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert s["mean"] == 5.5 and s["p50"] == 5.5 and s["min"] == 1 and s["max"] == 10 and s["n"] == 10
    assert math.isclose(s["p90"], 9.1) and math.isclose(s["p10"], 1.9) and math.isclose(s["p99"], 9.91)
    assert math.isclose(s["std"], 3.0276503540974917)


def test_summarize_single_and_empty():
    assert summarize([4.0])["std"] == 0.0
    empty = summarize([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


def _identity(b):
    return {"backend": "x", "model": "m", "weights": "random", "dtype": "float32", "device": "cpu", "batch_size": b,
            "prompt_len": 8, "new_tokens": 2}


def test_writer_schema_and_summary(tmp_path):
    w = ResultsWriter(tmp_path)
    stats = summarize([1.0, 2.0, 3.0])
    w.append_cell(rows_for_cell(_identity(1), [("decode_latency_ms", "ms", stats),
                                               ("host_rss_peak_mib", "MiB", summarize([10.0]))],
                                status="ok", error="", iterations=3))
    w.append_cell(rows_for_cell(_identity(2), [], status="oom", error="OutOfMemoryError: x", iterations=0))
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert list(tidy.columns) == list(ROW_COLUMNS)
    assert len(tidy) == 3
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 2
    ok = summary[summary.batch_size == 1].iloc[0]
    assert ok["decode_latency_ms_p50"] == 2.0 and ok["host_rss_peak_mib"] == 10.0
    assert summary[summary.batch_size == 2].iloc[0]["status"] == "oom"


def test_torn_last_cell_is_dropped_on_resume(tmp_path):
    w = ResultsWriter(tmp_path)
    w.append_cell(rows_for_cell(_identity(1), [("a_ms", "ms", summarize([1.0])), ("b_ms", "ms", summarize([2.0]))],
                                status="ok", error="", iterations=1))
    text = (tmp_path / "results.csv").read_text().splitlines()
    # simulate a kill in the middle of the second cell: one of its two rows and half a line made it
    torn = text[1].replace(",1,", ",2,", 1)
    (tmp_path / "results.csv").write_text("\n".join(text + [torn, text[2][:20]]) + "\n")
    kept = read_complete_rows(tmp_path / "results.csv")
    assert len(kept) == 2 and {r["batch_size"] for r in kept} == {"1"}
    w2 = ResultsWriter(tmp_path, resume=True)
    assert w2.is_done(_identity(1)) and not w2.is_done(_identity(2))
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2
