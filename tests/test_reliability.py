"""Reliability: every failure mode is provoked (fault-injection backend, tests/plugins/fault_backend_pkg) and we
check that the error is clear and that nothing finished is lost."""
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from helpers import ROOT, plugin_env, run_cli

GRID = ["grid.batch_sizes=[1,2]", "grid.prompt_lens=[8,16]", "grid.new_tokens=3", "measure.warmup=1",
        "measure.min_iters=2", "measure.min_seconds=0", "measure.overhead_steps=4"]


def cells(out):
    summary = pd.read_csv(out / "summary.csv")
    return {(int(r.batch_size), int(r.prompt_len)): (r.status, str(r.error)) for r in summary.itertuples()}


@pytest.mark.slow
def test_oom_cell_recorded_and_sweep_goes_on(plugin_site, tmp_path):
    proc = run_cli("backend=fault", "backend.oom_at=[1x16]", *GRID, f"output_dir={tmp_path}",
                   env=plugin_env(plugin_site))
    assert proc.returncode == 1, proc.stderr  # the sweep went on; the failed cells make the exit status
    assert "2 of 4 cells failed: b=1 p=16 (oom), b=2 p=16 (skipped)" in proc.stderr
    got = cells(tmp_path)
    assert got[(1, 8)][0] == "ok" and got[(2, 8)][0] == "ok"
    assert got[(1, 16)][0] == "oom" and "out of memory" in got[(1, 16)][1]
    assert got[(2, 16)][0] == "skipped" and "b=1 p=16 ran out of memory" in got[(2, 16)][1]


@pytest.mark.slow
def test_oom_without_skipping_tries_larger_cells(plugin_site, tmp_path):
    proc = run_cli("backend=fault", "backend.oom_at=[1x16]", "measure.skip_larger_after_oom=false", *GRID,
                   f"output_dir={tmp_path}", env=plugin_env(plugin_site))
    assert proc.returncode == 1 and cells(tmp_path)[(2, 16)][0] == "ok"


@pytest.mark.slow
def test_segfault_is_recorded_as_crashed_with_isolation(plugin_site, tmp_path):
    proc = run_cli("backend=fault", "backend.crash_at=[2x8]", "isolation=process", *GRID, f"output_dir={tmp_path}",
                   env=plugin_env(plugin_site))
    assert proc.returncode == 1 and "1 of 4 cells failed: b=2 p=8 (crashed)" in proc.stderr, proc.stderr
    got = cells(tmp_path)
    assert got[(2, 8)][0] == "crashed" and "SIGSEGV" in got[(2, 8)][1]
    assert [got[c][0] for c in [(1, 8), (1, 16), (2, 16)]] == ["ok", "ok", "ok"]
    import json

    assert json.loads((tmp_path / "run.json").read_text())["isolation"]["restarts"] == 1


@pytest.mark.slow
def test_hang_is_killed_at_cell_timeout(plugin_site, tmp_path):
    # 8 s: several times what a cell of the fault backend takes on a loaded machine (every cell runs under it)
    proc = run_cli("backend=fault", "backend.hang_at=[1x16]", "isolation=process", "measure.cell_timeout_s=8",
                   *GRID, f"output_dir={tmp_path}", env=plugin_env(plugin_site))
    assert proc.returncode == 1, proc.stderr
    got = cells(tmp_path)
    assert got[(1, 16)][0] == "timeout" and "8 s" in got[(1, 16)][1]
    assert sum(status == "ok" for status, _ in got.values()) == 3


@pytest.mark.slow
def test_cell_timeout_needs_process_isolation(tmp_path):
    proc = run_cli("measure.cell_timeout_s=5", f"output_dir={tmp_path}")
    assert proc.returncode == 2 and "add isolation=process" in proc.stderr


@pytest.mark.slow
def test_nan_logits_fail_validation(plugin_site, tmp_path):
    proc = run_cli("backend=fault", "backend.nan=true", "task=validate", f"output_dir={tmp_path}",
                   env=plugin_env(plugin_site))
    assert proc.returncode == 1
    v = pd.read_csv(tmp_path / "validation.csv")
    assert not v.passed.any() and v.reason.str.contains("non-finite").all()
    proc = run_cli("backend=fault", "backend.nan=true", *GRID, f"output_dir={tmp_path}/bench",
                   env=plugin_env(plugin_site))
    assert set(pd.read_csv(tmp_path / "bench" / "results.csv").validation) == {"fail"}


@pytest.mark.slow
def test_missing_library_is_one_line(plugin_site, tmp_path):
    proc = run_cli("backend=fault", "backend.missing_library=true", f"output_dir={tmp_path}",
                   env=plugin_env(plugin_site))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("(fix: pip install fault-native-lib)")


@pytest.mark.slow
def test_unwritable_output_dir(tmp_path):
    proc = run_cli("output_dir=/proc/enginebench-out")
    assert proc.returncode == 2 and "is not writable" in proc.stderr


def _start(args, site, out):
    env = {**os.environ, **plugin_env(site), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness", *args, f"output_dir={out}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_cells(out, n, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "summary.csv").exists() and len(pd.read_csv(out / "summary.csv")) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no finished cell in time")


SLOW = ["backend=fault", "backend.step_sleep_s=0.05", *GRID[:3], "measure.warmup=1", "measure.min_iters=3",
        "measure.min_seconds=0", "measure.overhead_steps=2"]
# For a signal sent once the first cell is written: the three cells left take ~10 s, so the run cannot finish
# before the signal arrives, however loaded the machine is (with SLOW they took ~2 s).
TO_INTERRUPT = [a if not a.startswith("measure.min_iters=") else "measure.min_iters=12" for a in SLOW]


@pytest.mark.slow
def test_kill_9_keeps_finished_cells_and_resume_runs_only_missing(plugin_site, tmp_path):
    proc = _start(SLOW, plugin_site, tmp_path)
    _wait_for_cells(tmp_path, 1, proc)
    proc.kill()  # SIGKILL: no cleanup at all
    proc.wait()
    before = pd.read_csv(tmp_path / "results.csv")
    done = set(zip(before.batch_size, before.prompt_len))
    assert 1 <= len(done) < 4
    resumed = run_cli(*SLOW, "resume=true", f"output_dir={tmp_path}", env=plugin_env(plugin_site))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume: {len(done)} of 4 cells already in results.csv" in resumed.stderr
    after = pd.read_csv(tmp_path / "results.csv")
    per_cell = after.groupby(["batch_size", "prompt_len"]).metric.count()
    assert len(per_cell) == 4 and per_cell.nunique() == 1  # every cell once, no duplicated rows
    # as text: a column empty in every row before (host_bound: read as float NaN) may hold words after
    kept = after.astype(str).merge(before.astype(str), on=list(before.columns))
    assert len(kept) == len(before)  # the finished cells' rows are untouched


@pytest.mark.slow
def test_ctrl_c_keeps_finished_cells(plugin_site, tmp_path):
    proc = _start(TO_INTERRUPT, plugin_site, tmp_path)
    _wait_for_cells(tmp_path, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "resume=true" in err
    assert len(pd.read_csv(tmp_path / "summary.csv")) >= 1


def _build_concurrently(root, marker, barrier):
    from harness.model.artifacts import get_or_build

    def build(tmp):
        with open(marker, "a") as f:
            f.write("built\n")
        time.sleep(1.0)
        (tmp / "payload.bin").write_bytes(b"x" * 1000)
        return {"what": "payload"}

    barrier.wait()
    art = get_or_build(root, "test", {"k": 1}, build, log=lambda m: None)
    assert (art.directory / "payload.bin").read_bytes() == b"x" * 1000


@pytest.mark.slow  # several processes, each importing torch
def test_concurrent_runs_share_the_artifact_cache(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_build_concurrently, args=(tmp_path, tmp_path / "marker", barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert (tmp_path / "marker").read_text() == "built\n"  # one built, two waited and reused


def test_partial_artifact_from_a_killed_build_is_rebuilt(tmp_path):
    from harness.model.artifacts import get_or_build, key_hash

    final = tmp_path / "test" / key_hash({"k": 2})
    final.mkdir(parents=True)
    (final / "payload.bin").write_bytes(b"half")  # a directory without manifest: what a crash could leave
    art = get_or_build(tmp_path, "test", {"k": 2}, lambda tmp: (tmp / "payload.bin").write_bytes(b"whole") and {},
                       log=lambda m: None)
    assert not art.reused and (art.directory / "payload.bin").read_bytes() == b"whole"
