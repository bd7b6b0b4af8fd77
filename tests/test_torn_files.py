"""Readers skip what is torn or foreign, one line each, and still report the rest: a corrupt samples/*.npz, a
pickled one (never unpickled), a run.json that is not an object, a garbage results CSV, one whose cell columns
are not numbers, one without a ``status`` column, a garbage validation.csv. Real damaged files."""
from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pandas as pd

from harness.measure import metrics
from harness.measure.stats import summarize
from harness.record.results import ResultsWriter, rows_for_cell
from harness.record.samples import read_cell_samples, samples_path, write_cell_samples


def _run(folder, backend, batches=(1, 2)):
    """A run directory as a finished job leaves it: results.csv, samples/, run.json."""
    folder.mkdir(parents=True)
    writer = ResultsWriter(folder)
    for b in batches:
        identity = {"backend": backend, "model": "m", "weights": "random", "dtype": "float32", "device": "cpu",
                    "batch_size": b, "prompt_len": 8, "new_tokens": 2}
        prefill, decode, e2e = [1.0 * b, 1.1 * b, 0.9 * b], [[0.5, 0.6]] * 3, [2.0, 2.1, 1.9]
        rows = rows_for_cell(identity, [(metrics.PREFILL_LATENCY, "ms", summarize(prefill)),
                                        (metrics.DECODE_LATENCY, "ms", summarize([0.5, 0.6] * 3)),
                                        (metrics.E2E_LATENCY, "ms", summarize(e2e))],
                             status="ok", error="", iterations=3)
        writer.append_cell(rows)
        write_cell_samples(folder, identity, prefill, decode, e2e)
    (folder / "run.json").write_text(json.dumps({"config": {"backend": {"name": backend}}}))
    return folder


class Evil:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_damaged_samples_are_skipped_with_one_line_and_never_unpickled(tmp_path, capsys):
    run = _run(tmp_path / "run", "b")
    samples_path(run, 1, 8, 2).write_bytes(b"PK\x03\x04 torn")  # a zip cut short
    buf = io.BytesIO()
    payload = np.array([Evil(tmp_path / "pickle-ran")], dtype=object)
    np.savez(buf, prefill_ms=payload, decode_ms=np.zeros((1, 2)), e2e_ms=np.zeros(1), meta=np.array("{}"))
    samples_path(run, 2, 8, 2).write_bytes(buf.getvalue())  # holds a pickle
    assert read_cell_samples(run, 1, 8, 2) is None and read_cell_samples(run, 2, 8, 2) is None
    err = capsys.readouterr().err
    assert err.count("skipped the damaged samples file") == 2
    assert not (tmp_path / "pickle-ran").exists()
    assert pickle.loads(pickle.dumps(Evil(tmp_path / "control"))) == 0 and (tmp_path / "control").exists()


def test_report_skips_each_damaged_input_and_reports_the_rest(tmp_path, capsys):
    from harness.report.cli import build_report

    good = _run(tmp_path / "good", "hf-flashattn-staticcache")
    other = _run(tmp_path / "other", "onnxruntime")
    (other / "run.json").write_text("[1, 2]")  # valid JSON, not an object
    samples_path(other, 1, 8, 2).write_bytes(b"garbage")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "results.csv").write_bytes(b"\x00\xff,,\n\"unterminated\n1,2,3\n")
    nostatus = _run(tmp_path / "nostatus", "x")
    pd.read_csv(nostatus / "results.csv").drop(columns=["status"]).to_csv(nostatus / "results.csv", index=False)
    words = _run(tmp_path / "words", "y")
    frame = pd.read_csv(words / "results.csv")
    frame["batch_size"] = "many"
    frame.to_csv(words / "results.csv", index=False)
    (good / "validation.csv").write_bytes(b"\"\x00unterminated")
    written = build_report([str(tmp_path)], tmp_path / "report", plots=False)
    report = pd.read_csv(written["results"])
    assert set(report.engine) == {"hf-flashattn-staticcache", "onnxruntime"}
    assert written["report"].is_file()
    err = capsys.readouterr().err
    for said in ("garbage/results.csv", "no status column", "batch_size holds values that are not numbers",
                 "other/run.json: not a JSON object", "skipped the damaged samples file",
                 "validation.csv: unreadable"):
        assert said in err, said
    assert "Traceback" not in err


def test_compare_with_a_damaged_samples_file_still_compares(tmp_path, capsys):
    from harness.report.aggregate import load_results
    from harness.report.regression import compare_runs

    old, new = _run(tmp_path / "old", "b"), _run(tmp_path / "new", "b")
    samples_path(new, 2, 8, 2).write_bytes(b"")
    table = compare_runs(load_results([old]), load_results([new]), 0.05)
    assert len(table) and "skipped the damaged samples file" in capsys.readouterr().err
