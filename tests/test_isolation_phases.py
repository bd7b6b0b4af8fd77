"""isolation=process (issue 18, points 4-5): every phase that calls the backend — load, validation, the
harness-overhead measurement, each cell — runs under a timeout and a crash in it is named after it; the worker dies
with its parent; Ctrl-C prints one line."""
import json
import signal
import time

import pandas as pd
import psutil
import pytest
from test_reliability import GRID, TO_INTERRUPT, _start, _wait_for_cells, cells

from helpers import plugin_env, run_cli

pytestmark = pytest.mark.slow  # each test starts several worker processes


def run(site, out, *args):
    proc = run_cli("backend=fault", "isolation=process", *GRID, *args, f"output_dir={out}", env=plugin_env(site))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads((out / "run.json").read_text())


def test_crash_in_the_overhead_measurement_is_named_and_costs_one_cell(plugin_site, tmp_path):
    # the overhead measurement runs the first prefill at batch 1, prompt 8: the same shape as cell 1x8
    _, info = run(plugin_site, tmp_path, "backend.crash_at=[1x8]")
    assert "SIGSEGV" in info["harness_overhead"]["error"]
    assert "during the harness-overhead measurement" in info["harness_overhead"]["error"]
    got = cells(tmp_path)
    assert got[(1, 8)][0] == "crashed" and [got[c][0] for c in [(1, 16), (2, 8), (2, 16)]] == ["ok"] * 3


def test_hang_in_the_overhead_measurement_is_cut_by_the_cell_timeout(plugin_site, tmp_path):
    started = time.monotonic()
    # 8 s: several times what validation and a cell of the fault backend take on a loaded machine, both of which
    # run under the same timeout; a longer one only adds to the wait for the hang
    _, info = run(plugin_site, tmp_path, "backend.hang_at=[1x8]", "measure.cell_timeout_s=8")
    assert time.monotonic() - started < 200
    assert "no result after 8 s during the harness-overhead measurement" in info["harness_overhead"]["error"]
    got = cells(tmp_path)
    assert got[(1, 8)][0] == "timeout" and [got[c][0] for c in [(1, 16), (2, 8), (2, 16)]] == ["ok"] * 3


def test_crash_during_validation_is_a_failed_validation_and_the_cells_run(plugin_site, tmp_path):
    # validation runs batch 2, prompt 16 (validation.batch / validation.prompt_len): the shape of cell 2x16
    _, info = run(plugin_site, tmp_path, "backend.crash_at=[2x16]", "validation.batch=2",
                     "validation.prompt_len=16")
    assert "SIGSEGV" in info["validation_error"] and "during validation" in info["validation_error"]
    got = cells(tmp_path)
    assert got[(2, 16)][0] == "crashed" and [got[c][0] for c in [(1, 8), (1, 16), (2, 8)]] == ["ok"] * 3
    assert set(pd.read_csv(tmp_path / "results.csv").validation) == {"fail"}


def test_hang_at_load_is_cut_by_the_load_timeout(plugin_site, tmp_path):
    proc, _ = run(plugin_site, tmp_path, "backend.hang_at=[load]", "measure.load_timeout_s=10")
    assert proc.returncode == 1
    got = cells(tmp_path)
    assert {s for s, _ in got.values()} == {"timeout"}
    assert all("no result after 10 s while loading (measure.load_timeout_s)" in e for _, e in got.values())


def test_crash_at_load_is_recorded_for_every_cell(plugin_site, tmp_path):
    proc, _ = run(plugin_site, tmp_path, "backend.crash_at=[load]")
    assert proc.returncode == 1
    got = cells(tmp_path)
    assert {s for s, _ in got.values()} == {"crashed"}
    assert all("SIGSEGV" in e and "while loading" in e for _, e in got.values())


def _worker_of(proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        children = psutil.Process(proc.pid).children()
        workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]  # not the resource tracker
        if workers:
            return workers[0]
        time.sleep(0.2)
    raise AssertionError("no worker process")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_worker_dies_with_its_parent(plugin_site, tmp_path, how):
    # the worker is inside a hung cell (not waiting on its pipe, which would end it anyway) when the parent dies
    proc = _start(["backend=fault", "isolation=process", "backend.hang_at=[2x16]", "validation.enabled=false",
                   *GRID], plugin_site, tmp_path)
    _wait_for_cells(tmp_path, 3, proc)
    worker = _worker_of(proc)
    time.sleep(1.0)
    proc.send_signal(how)
    proc.wait(30)
    _, alive = psutil.wait_procs([worker], timeout=15)
    assert not alive, f"worker {worker.pid} outlived its parent"
    assert len(pd.read_csv(tmp_path / "summary.csv")) == 3  # the finished cells stay


def test_ctrl_c_with_isolation_prints_one_line(plugin_site, tmp_path):
    proc = _start([*TO_INTERRUPT, "isolation=process"], plugin_site, tmp_path)
    _wait_for_cells(tmp_path, 1, proc)
    worker = _worker_of(proc)
    proc.send_signal(signal.SIGINT)
    worker.send_signal(signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "KeyboardInterrupt" not in err  # before: the child's ~35-line traceback
    last = err.strip().splitlines()[-1]
    assert last.startswith("enginebench: interrupted; every finished cell is in") and "resume=true" in last, err
    _, alive = psutil.wait_procs([worker], timeout=15)
    assert not alive
