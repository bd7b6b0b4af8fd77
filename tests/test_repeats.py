"""measure.repeats end to end: fresh loads, the repeat column, interleaved multirun jobs, and the compare gate on runs
of the fault backend (tests/plugins/fault_backend_pkg) whose loads really drift, whose build is really slower, or
whose steps really jitter (real sleeps in a real backend, the HF static-cache backend underneath)."""
import json

import pandas as pd
import pytest
from test_verdicts import _report, make_run

from harness.run.repeats import expand_multirun
from helpers import plugin_env, run_cli

# One overhead step: the overhead measurement (twelve timed passes per load, nothing here reads it) sleeps in
# every step like the cells do, 3 s a load with four steps.
TINY = ["grid.batch_sizes=[1]", "grid.prompt_lens=[8]", "grid.new_tokens=4", "measure.warmup=1",
        "measure.min_iters=5", "measure.min_seconds=0", "measure.overhead_steps=1", "validation.enabled=false"]


def test_multirun_repeats_become_the_outermost_sweep_dimension():
    argv = ["-m", "backend=a,b", "measure.repeats=3", "grid.new_tokens=4"]
    assert expand_multirun(argv) == ["-m", "measure.repeat=0,1,2", "backend=a,b", "measure.repeats=3",
                                     "grid.new_tokens=4"]
    assert expand_multirun(["backend=a", "measure.repeats=3"]) == ["backend=a", "measure.repeats=3"]  # one job
    assert expand_multirun(["-m", "backend=a,b"]) == ["-m", "backend=a,b"]
    assert expand_multirun(["-m", "backend=a,b", "measure.repeats=1"]) == ["-m", "backend=a,b", "measure.repeats=1"]


@pytest.mark.slow  # starts the command line
def test_bad_repeats_and_test_options_are_one_line_exit_2(tmp_path):
    proc = run_cli("measure.repeats=0", f"output_dir={tmp_path}/r")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "measure.repeats=0" in proc.stderr and not (tmp_path / "r" / "results.csv").exists()
    a = make_run(tmp_path / "a", "hf", {(1, 8): 2.0})
    for flag, value in (("--min-effect", "-1"), ("--alpha", "2")):
        proc = _report("compare", a, a, flag, value)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert flag in proc.stderr and "fix:" in proc.stderr
        proc = _report(a, flag, value, "--out", tmp_path / "rep", "--no-plots")
        assert proc.returncode == 2 and flag in proc.stderr and not (tmp_path / "rep").exists()


def _results(run_dir):
    return pd.read_csv(run_dir / "results.csv")


@pytest.mark.slow  # starts the command line
def test_repeats_drift_slowdown_and_jitter_through_the_gate(plugin_site, tmp_path):
    counter = tmp_path / "loads"
    drift = ["backend=fault", "backend.step_sleep_s=0.05", "backend.sleep_in_prefill=true",
             "backend.load_drift=0.06", f"backend.load_counter={counter}", "measure.repeats=3", *TINY]
    env = plugin_env(plugin_site, OMP_NUM_THREADS="1")  # sleeps, not thread contention, set the times
    # A/A: two runs of three loads each; the loads drift by -6 %, 0, +6 % (first run: a worker process per load)
    a1 = run_cli(*drift, "isolation=process", f"output_dir={tmp_path}/a1", env=env)
    assert a1.returncode == 0, a1.stderr
    rows = _results(tmp_path / "a1")
    assert sorted(rows.repeat.unique()) == [0, 1, 2] and (rows.status == "ok").all()
    info = json.loads((tmp_path / "a1" / "run.json").read_text())
    loads = info["repeats"]["loads"]
    assert [load["repeat"] for load in loads] == [0, 1, 2] and info["repeats"]["count"] == 3
    pids = [pid for load in loads for pid in load["worker_pids"]]
    assert len(set(pids)) == 3  # three loads, each in a fresh worker process
    assert counter.read_text() == "3"
    assert {f.name for f in (tmp_path / "a1" / "samples").iterdir()} == {"b1_p8_n4.npz", "b1_p8_n4_r1.npz",
                                                                         "b1_p8_n4_r2.npz"}
    assert run_cli(*drift, f"output_dir={tmp_path}/a2", env=env).returncode == 0  # in-process: three loads too
    assert counter.read_text() == "6"
    same = _report("compare", tmp_path / "a1", tmp_path / "a2", "--fail-on-regression", "--out", tmp_path / "aa.csv")
    assert same.returncode == 0, same.stdout + same.stderr
    aa = pd.read_csv(tmp_path / "aa.csv")
    assert set(aa.verdict) == {"within noise"} and set(aa.scope) == {"between runs"}
    assert (aa.runs_old == 3).all() and (aa.resolves_change >= 0.05).all()
    # the same configuration, built 50 % slower
    slow = run_cli(*drift, f"output_dir={tmp_path}/slow", env={**env, "FAULT_BACKEND_SLOWDOWN": "1.5"})
    assert slow.returncode == 0, slow.stderr
    gate = _report("compare", tmp_path / "a1", tmp_path / "slow", "--fail-on-regression")
    assert gate.returncode == 1 and "gate: regression: fault[" in gate.stderr
    # two runs of a jittery engine: nothing can be judged, and the gate says so unless told to let it pass
    jitter = ["backend=fault", "backend.step_sleep_s=0.1", "backend.step_jitter=true", "backend.sleep_in_prefill=true",
              *TINY]  # each sleep an exponential draw: CVs far above 0.25 whatever the machine adds
    for name in ("j1", "j2"):
        assert run_cli(*jitter, f"output_dir={tmp_path}/{name}", env=env).returncode == 0
    unjudged = _report("compare", tmp_path / "j1", tmp_path / "j2", "--fail-on-regression")
    assert unjudged.returncode == 1 and "gate: unstable: fault[" in unjudged.stderr
    assert "--allow-unstable" in unjudged.stderr
    allowed = _report("compare", tmp_path / "j1", tmp_path / "j2", "--fail-on-regression", "--allow-unstable")
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.slow  # starts the command line
def test_multirun_interleaves_the_repeats_of_its_configurations(plugin_site, tmp_path):
    # isolation=none: a multirun's jobs default to worker processes of their own (a fresh interpreter each, seconds
    # apiece); not what this checks (test_scaling.py and test_hostile_plugins.py run multiruns in them)
    proc = run_cli("-m", "backend=fault", "backend.step_sleep_s=0.0,0.001", "measure.repeats=2", *TINY,
                   "isolation=none", f"output_dir={tmp_path}", env=plugin_env(plugin_site))
    assert proc.returncode == 0, proc.stderr
    # in the order the loads started (job folders are named by configuration, not by number)
    records = sorted((json.loads(p.read_text()) for p in tmp_path.glob("*/run.json") if p.parent.name != "report"),
                     key=lambda r: r["repeats"]["loads"][0]["started"])
    order = [(r["config"]["backend"]["step_sleep_s"], r["repeats"]["loads"][0]["repeat"]) for r in records]
    assert order == [(0.0, 0), (0.001, 0), (0.0, 1), (0.001, 1)]  # A B A B, not A A B B
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Order in which the repeats were loaded" in report and "interleaved" in report
    comp = pd.read_csv(tmp_path / "report" / "comparison.csv")
    assert (comp.filter(like="decode_ms_repeats__").fillna(0) == 2).all().all()
