"""Exit codes a script can trust (0 all ok, 1 a failed cell or validation, 2 bad input, 130 interrupt) for every
task, multirun and the Python API; the run directory printed at the end; what each run keeps beside results.csv
(every sample, machine state, the configuration's label); normal file permissions; --version.

Failures are real: the fault-injection plugin (tests/plugins/fault_backend_pkg) raising in decode_step."""
import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from helpers import FAST, plugin_env, run_cli

GRID = ["grid.batch_sizes=[1,2]", "grid.prompt_lens=[8,16]", "grid.new_tokens=3", "measure.warmup=1",
        "measure.min_iters=2", "measure.min_seconds=0", "measure.overhead_steps=4"]


@pytest.mark.slow
def test_every_cell_failing_exits_1_and_says_which(plugin_site, tmp_path):
    proc = run_cli("backend=fault", "backend.error_at=[*]", "validation.enabled=false", *GRID,
                   f"output_dir={tmp_path}", env=plugin_env(plugin_site))
    assert proc.returncode == 1, proc.stderr
    assert "4 of 4 cells failed" in proc.stderr and "b=2 p=16 (error)" in proc.stderr
    assert "injected decode_step failure" in proc.stderr
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 4 and set(summary.status) == {"error"}  # the run's files are still complete
    assert f"results: {tmp_path}" in proc.stderr
    assert json.loads((tmp_path / "run.json").read_text())["exit_code"] == 1


@pytest.mark.slow
def test_one_failed_cell_exits_1_the_others_are_kept(plugin_site, tmp_path):
    proc = run_cli("backend=fault", "backend.error_at=[2x8]", *GRID, f"output_dir={tmp_path}",
                   env=plugin_env(plugin_site))
    assert proc.returncode == 1, proc.stderr
    assert "1 of 4 cells failed: b=2 p=8 (error)" in proc.stderr
    statuses = pd.read_csv(tmp_path / "summary.csv").set_index(["batch_size", "prompt_len"]).status
    assert statuses[(2, 8)] == "error" and (statuses.drop((2, 8)) == "ok").all()


@pytest.mark.slow
def test_failed_validation_exits_1_in_a_benchmark(plugin_site, tmp_path):
    proc = run_cli("backend=fault", "backend.nan=true", *GRID, f"output_dir={tmp_path}",
                   env=plugin_env(plugin_site))
    assert proc.returncode == 1 and "validation failed" in proc.stderr


@pytest.mark.slow
def test_multirun_worst_job_wins(plugin_site, tmp_path):
    # isolation=none: a multirun's jobs default to worker processes of their own (a fresh interpreter each, seconds
    # apiece); not what this checks (test_scaling.py and test_hostile_plugins.py run multiruns in them)
    proc = run_cli("-m", "backend=fault", "backend.error_at=[],[1x8]", *GRID[:2], "grid.prompt_lens=[8]",
                   *GRID[2:], "validation.enabled=false", "isolation=none", f"hydra.sweep.dir={tmp_path}",
                   env=plugin_env(plugin_site))
    assert proc.returncode == 1, proc.stderr
    codes = sorted(json.loads(p.read_text())["exit_code"] for p in tmp_path.glob("*/run.json"))
    assert codes == [0, 1]


@pytest.mark.slow
def test_python_api_raises_on_a_failed_job(plugin_site, tmp_path):
    code = ("import sys\nfrom harness.api import benchmark\nfrom harness.errors import JobFailed\n"
            f"try:\n    benchmark(['backend=fault', 'backend.error_at=[1x8]', *{GRID!r}],"
            f" output_dir={str(tmp_path)!r})\n"
            "except JobFailed as exc:\n    print('JobFailed', exc.exit_code, exc.summary)\n")
    import subprocess
    import sys

    env = {**os.environ, **plugin_env(plugin_site)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert "JobFailed 1 1 of 4 cells failed: b=1 p=8 (error)" in out.stdout, out.stderr


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    proc = run_cli(*FAST, f"output_dir={out}")
    return out, proc


@pytest.mark.slow
def test_a_good_run_exits_0_prints_its_directory_and_keeps_samples(good_run):
    out, proc = good_run
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"enginebench: all 2 cells ok; results: {out}"
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.csv", "summary.csv", "run.json", "validation.csv", "samples/b1_p8_n3.npz"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name  # like any file, not 0600
    with np.load(out / "samples" / "b2_p8_n3.npz") as s:
        assert s["decode_ms"].shape[1] == 3 and len(s["e2e_ms"]) == s["decode_ms"].shape[0] >= 2
        meta = json.loads(str(s["meta"]))
    assert meta["identity"]["batch_size"] == 2 and "load_avg_1m" in meta["machine_state"]
    tidy = pd.read_csv(out / "results.csv")
    decode = tidy[tidy.metric == "decode_latency_ms"]
    assert (decode.p50_ci_low <= decode.p50).all() and (decode.p50 <= decode.p50_ci_high).all()
    assert decode.cv.notna().all() and "machine_warnings" in tidy.columns
    info = json.loads((out / "run.json").read_text())
    assert info["configuration"] == "hf-flashattn-staticcache"
    assert {"start", "end"} <= set(info["machine_state"]) and "cpu_count" in info["machine_state"]["start"]


@pytest.mark.slow
def test_target_rel_ci_keeps_measuring_until_tight(tmp_path):
    proc = run_cli(*FAST, "grid.batch_sizes=[1]", "measure.target_rel_ci=0.5", "measure.max_seconds=20",
                   f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(*FAST, "grid.batch_sizes=[1]", "measure.target_rel_ci=0.0001", "measure.max_seconds=2",
                   "measure.min_iters=2", f"output_dir={tmp_path}/cap")
    assert proc.returncode == 0, proc.stderr
    assert "not reached" in proc.stderr  # the cap ends the cell and says so
    with np.load(tmp_path / "cap" / "samples" / "b1_p8_n3.npz") as s:
        assert len(s["e2e_ms"]) > 2  # measured past min_iters while the interval was too wide


@pytest.mark.slow
def test_bad_target_is_one_line(tmp_path):
    proc = run_cli("measure.target_rel_ci=2", f"output_dir={tmp_path}")
    assert proc.returncode == 2 and "measure.target_rel_ci=2" in proc.stderr


@pytest.mark.slow
def test_version_names_enginebench_and_libraries():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("enginebench ")
    assert "torch " in proc.stdout and "Hydra" not in proc.stdout
