"""results.csv is never left torn, and every reader skips (and says it skipped) a tail torn by a kill
(issue 18, point 7): the writer truncates a failed append back, report/compare/resume read the whole cells."""
import subprocess
import sys

import pandas as pd
import pytest

from harness.errors import UserError
from harness.measure.stats import summarize
from harness.record.results import ResultsWriter, read_cells, read_results_frame, rows_for_cell
from helpers import FAST, ROOT, run_cli, run_report_cli


def _identity(b, p=8):
    return {"backend": "x", "model": "m", "weights": "random", "dtype": "float32", "device": "cpu", "batch_size": b,
            "prompt_len": p, "new_tokens": 2}


def _ok(b, p=8):
    metrics = [("decode_latency_ms", "ms", summarize([1.0, 2.0])), ("b_ms", "ms", summarize([3.0]))]
    return rows_for_cell(_identity(b, p), metrics, status="ok", error="", iterations=2)


def _failed(b, status):
    return rows_for_cell(_identity(b), [], status=status, error=f"{status} here", iterations=0)


def test_a_short_write_is_truncated_back(tmp_path):
    # RLIMIT_FSIZE makes the kernel write only part of the cell and then fail (EFBIG): a real short write
    w = ResultsWriter(tmp_path)
    w.append_cell(_ok(1))
    before = (tmp_path / "results.csv").read_bytes()
    code = (f"import resource, signal, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from harness.record.results import append_whole\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 10}, resource.RLIM_INFINITY))\n"
            "try:\n"
            f"    append_whole({str(tmp_path / 'results.csv')!r}, b'y' * 1000)\n"
            "except OSError as exc:\n"
            "    print(exc.errno)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import errno

    assert out.stdout.strip() == str(errno.EFBIG)
    assert (tmp_path / "results.csv").read_bytes() == before


def _torn_run(tmp_path):
    """results.csv with two whole cells, then a cell cut by a kill: one row of two and half a line."""
    w = ResultsWriter(tmp_path)
    w.append_cell(_ok(1))
    w.append_cell(_ok(2))
    lines = (tmp_path / "results.csv").read_text().splitlines(keepends=True)
    with open(tmp_path / "results.csv", "a") as f:
        f.write(lines[1].replace(",1,8,", ",4,8,", 1))
        f.write(lines[2].replace(",1,8,", ",4,8,", 1)[:30])
    return tmp_path / "results.csv"


def test_readers_skip_a_torn_tail_and_say_so(tmp_path):
    path = _torn_run(tmp_path)
    rows, skipped = read_cells(path)
    assert {r["batch_size"] for r in rows} == {"1", "2"} and len(rows) == 4
    assert "torn last line" in skipped and "1 incomplete cell" in skipped
    frame, _ = read_results_frame(path)
    assert len(frame) == 4
    assert pd.api.types.is_numeric_dtype(frame.p50)


@pytest.mark.slow  # runs the command
def test_report_and_compare_read_a_torn_results_csv(tmp_path):
    (tmp_path / "run").mkdir()
    path = _torn_run(tmp_path / "run")
    proc = run_cli_report(str(path.parent), "--no-plots", "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    assert "skipped a torn last line" in proc.stderr and "1 incomplete cell" in proc.stderr
    assert len(pd.read_csv(tmp_path / "report" / "results.csv")) == 4
    proc = run_cli_report("compare", str(path), str(path))
    assert proc.returncode == 0, proc.stderr
    assert "skipped a torn last line" in proc.stderr


def test_resume_drops_the_torn_cell_and_says_so(tmp_path, capsys):
    _torn_run(tmp_path)
    w = ResultsWriter(tmp_path, resume=True)
    assert w.is_done(_identity(1)) and w.is_done(_identity(2)) and not w.is_done(_identity(4))
    err = capsys.readouterr().err
    assert "resume: skipped a torn last line (30 characters); 1 incomplete cell(s)" in err
    assert read_cells(tmp_path / "results.csv")[1] is None  # rewritten clean


def test_report_on_a_zero_byte_csv_is_one_line(tmp_path):
    (tmp_path / "results.csv").write_bytes(b"")
    proc = run_cli_report(str(tmp_path / "results.csv"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("enginebench: error: ")
    assert "is empty (0 bytes" in proc.stderr
    with pytest.raises(UserError):
        read_results_frame(tmp_path / "results.csv")


@pytest.mark.parametrize("retry", [True, False])
def test_resume_reruns_failed_cells_unless_told_not_to(tmp_path, retry):
    w = ResultsWriter(tmp_path)
    w.append_cell(_ok(1))
    for b, status in [(2, "load_failed"), (3, "error"), (4, "crashed"), (5, "timeout"), (6, "oom"),
                      (7, "skipped")]:
        w.append_cell(_failed(b, status))
    w2 = ResultsWriter(tmp_path, resume=True, retry_failed=retry)
    assert [w2.is_done(_identity(b)) for b in range(1, 8)] == [True, *[not retry] * 4, True, True]
    kept = pd.read_csv(tmp_path / "results.csv")
    assert len(kept) == (4 if retry else 8)  # the retried cells' old rows are gone: no duplicates later


def run_cli_report(*args):
    return run_report_cli(*args, env={"PYTHONPATH": str(ROOT)})


@pytest.mark.slow  # runs the command
def test_run_after_a_torn_results_csv_is_reported_in_one_line_and_resumes(tmp_path):
    proc = run_cli(*FAST, f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "results.csv", "a") as f:
        f.write("x,m,random,float32,cpu,1")  # a torn write
    proc = run_cli(*FAST, "resume=true", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "torn last line" in proc.stderr and "all 2 cells" in proc.stderr
