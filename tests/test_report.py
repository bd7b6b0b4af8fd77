"""Reporting: a two-backend multirun on CPU yields comparison.csv, plots and report.md; the launchers are wired;
results from parallel jobs aggregate. (Verdicts, compare and baselines on synthetic samples: test_verdicts.py.)"""

import pandas as pd
import pytest

from harness.report.comparison import comparison_table
from helpers import FAST, run_cli, run_report_cli


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("sweep")
    proc = run_cli("-m", "backend=hf-flashattn-staticcache,onnxruntime", *FAST, f"hydra.sweep.dir={sweep}",
                   f"cache_dir={sweep}/cache")
    assert proc.returncode == 0, proc.stderr
    return sweep


@pytest.mark.slow
def test_multirun_writes_comparison_plots_and_report(multirun):
    report = multirun / "report"
    comparison = pd.read_csv(report / "comparison.csv")
    assert len(comparison) == 2  # one row per grid cell
    for col in ["decode_ms_p50__onnxruntime", "decode_ms_p50__hf-flashattn-staticcache",
                "decode_ms_speedup__onnxruntime", "decode_ms_verdict__onnxruntime", "status__onnxruntime"]:
        assert col in comparison.columns
    assert set(comparison.decode_ms_verdict__onnxruntime) <= {"faster", "slower", "within noise", "unstable"}
    pngs = sorted(p.name.split("__")[0] for p in (report / "plots").glob("*.png"))
    assert pngs == ["decode_latency_vs_batch", "peak_memory_vs_batch", "prefill_latency_vs_prompt",
                    "roofline_fraction_vs_batch", "speed_vs_accuracy", "throughput_vs_batch"]
    text = (report / "report.md").read_text()
    for section in ("## Environment", "## Method", "## Results", "## Speed vs accuracy", "## Plots", "## Validation",
                    "## Caveats"):
        assert section in text
    assert "random weights" in text


@pytest.mark.slow
def test_cells_a_backend_did_not_run_are_marked(multirun):
    tidy = pd.read_csv(multirun / "report" / "results.csv")
    extra = tidy[(tidy.backend == "onnxruntime") & (tidy.batch_size == 1)].assign(batch_size=64)
    table = comparison_table(pd.concat([tidy, extra]), "hf-flashattn-staticcache")
    row = table[table.batch_size == 64].iloc[0]
    assert row["status__hf-flashattn-staticcache"] == "not run" and row["status__onnxruntime"] == "ok"


@pytest.mark.slow
def test_report_cli_on_run_dirs_and_csv(multirun, tmp_path):
    jobs = [str(p / "results.csv") for p in sorted(multirun.iterdir()) if (p / "results.csv").exists()]
    proc = run_report_cli(*jobs, "--out", tmp_path, "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "comparison.csv")) == 2


def test_report_cli_bad_path_is_one_line(tmp_path):
    proc = run_report_cli(tmp_path / "nothing")
    assert proc.returncode == 2 and proc.stderr.startswith("enginebench: error:")


@pytest.mark.slow
def test_joblib_launcher_parallel_jobs_aggregate(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = run_cli("-m", "hydra/launcher=enginebench_joblib", "device=pin", "seed=1,2", *FAST,
                   f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    import json

    runs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/run.json"))]
    assert [r["device"] for r in runs] == ["cpu", "cpu"]  # no GPU here: pinning falls back to the CPU
    comparison = pd.read_csv(tmp_path / "report" / "comparison.csv")
    tidy = pd.read_csv(tmp_path / "report" / "results.csv")
    assert set(tidy.seed) == {1, 2} and len(comparison) == 2


@pytest.mark.slow
def test_slurm_launcher_config_resolves():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_cli("--cfg", "hydra", "-p", "hydra.launcher", "hydra/launcher=enginebench_slurm")
    assert proc.returncode == 0, proc.stderr
    assert "SlurmLauncher" in proc.stdout and "gpus_per_node: 1" in proc.stdout
