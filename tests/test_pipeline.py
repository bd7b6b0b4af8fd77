"""One pipeline, two executors (harness/run/pipeline.py): the exit-status rule holds on both, whatever a plugin does.

Faults are injected for real by the fault plugin (tests/plugins/fault_backend_pkg): a hook that calls
``sys.exit(N)``, a validation that hangs past its timeout, a quantization the backend refuses."""
import json

import pytest

from helpers import FAST, plugin_env, run_cli

GRID = ["grid.batch_sizes=[1,2]", "grid.prompt_lens=[8,16]", "grid.new_tokens=3", "measure.warmup=1",
        "measure.min_iters=2", "measure.min_seconds=0", "measure.overhead_steps=4"]


def _statuses(out):
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    return {(int(r.batch_size), int(r.prompt_len)): (r.status, str(r.error)) for r in summary.itertuples()}


@pytest.mark.slow
@pytest.mark.parametrize("isolation,code", [("none", 0), ("process", 3)])
def test_sys_exit_in_a_cell_fails_that_cell_not_the_run(plugin_site, tmp_path, isolation, code):
    proc = run_cli("backend=fault", "backend.exit_at=[1x16]", f"backend.exit_code={code}", f"isolation={isolation}",
                   "validation.enabled=false", *GRID, f"output_dir={tmp_path}", env=plugin_env(plugin_site))
    assert proc.returncode == 1, proc.stderr
    assert "1 of 4 cells failed: b=1 p=16 (error)" in proc.stderr  # the outcome line, every cell accounted for
    got = _statuses(tmp_path)
    assert got[(1, 16)][0] == "error" and f"sys.exit({code})" in got[(1, 16)][1]
    assert [got[c][0] for c in [(1, 8), (2, 8), (2, 16)]] == ["ok"] * 3
    assert json.loads((tmp_path / "run.json").read_text())["exit_code"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["none", "process"])
def test_sys_exit_at_load_is_a_failed_load_with_its_traceback(plugin_site, tmp_path, isolation):
    proc = run_cli("backend=fault", "backend.exit_at=[load]", "backend.exit_code=0", f"isolation={isolation}",
                   *FAST, f"output_dir={tmp_path}", env=plugin_env(plugin_site))
    assert proc.returncode == 1, proc.stderr
    assert "2 of 2 cells failed" in proc.stderr and "results:" in proc.stderr
    assert {s for s, _ in _statuses(tmp_path).values()} == {"load_failed"}
    run = json.loads((tmp_path / "run.json").read_text())
    # the one line says what; the traceback in run.json says where (in the plugin, on either executor)
    assert "sys.exit(0)" in run["load_error"]
    assert "Traceback" in run["load_traceback"] and "fault_backend" in run["load_traceback"]


@pytest.mark.slow
def test_a_validation_that_times_out_under_isolation_fails_the_run(plugin_site, tmp_path):
    # validation runs batch 2 x prompt 12, a shape no cell has: only the validation hangs
    proc = run_cli("backend=fault", "backend.hang_at=[2x12]", "isolation=process", "measure.cell_timeout_s=8",
                   "validation.batch=2", "validation.prompt_len=12", *FAST, f"output_dir={tmp_path}",
                   env=plugin_env(plugin_site))
    assert proc.returncode == 1, proc.stderr
    assert "validation failed (timeout: no result after 8 s during validation" in proc.stderr
    assert {s for s, _ in _statuses(tmp_path).values()} == {"ok"}  # the cells still ran


def test_the_isolated_path_checks_quant_too(tmp_path):
    # the Python API has no up-front check of the command line: the pipeline checks, on both executors, before
    # anything loads (ONNX Runtime's check_quant refuses fp8)
    from harness.api import benchmark
    from harness.errors import UserError

    for isolation in ("none", "process"):
        with pytest.raises(UserError, match="no fp8 weight-only MatMul"):
            benchmark(["backend=onnxruntime", "device=cpu", "quant=fp8", f"isolation={isolation}", *FAST],
                      output_dir=tmp_path / isolation)
        assert not (tmp_path / isolation / "results.csv").exists() or \
            (tmp_path / isolation / "results.csv").read_text().count("\n") <= 1


def test_every_job_of_a_large_sweep_is_listed_for_the_up_front_check():
    # the check composed only the first 256 jobs: job 301 on (batch size 0) ran into a traceback after hours
    from harness.config.compose import sweep_combinations

    combos = sweep_combinations(["grid.batch_sizes=[1],[0]", "seed=range(0,300)"])
    assert len(combos) == 600 and combos[300] == ["grid.batch_sizes=[0]", "seed=0"]


def test_the_last_job_of_a_sweep_and_its_report_baseline_are_checked_before_the_first_runs(tmp_path):
    from harness.config.compose import precheck
    from harness.errors import UserError

    sweep = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    with pytest.raises(UserError, match=r"grid.batch_sizes has values below 1"):
        precheck(["-m", "grid.batch_sizes=[1],[2],[0]", sweep])
    with pytest.raises(UserError, match=r"report.baseline 'nosuch': it is not among the configurations in this "
                                        r"sweep \(hf-flashattn-staticcache, onnxruntime\)"):
        precheck(["-m", "backend=hf-flashattn-staticcache,onnxruntime", "report.baseline=nosuch", sweep])
    precheck(["-m", "backend=hf-flashattn-staticcache,onnxruntime", "report.baseline=onnxruntime", sweep])
