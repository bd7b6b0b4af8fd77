"""The enginebench command end to end: default run, multirun, task=validate, and one-line errors."""
import json

import pandas as pd
import pytest

from helpers import FAST, run_cli


@pytest.mark.slow
def test_default_run_writes_results(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*FAST, f"output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    tidy = pd.read_csv(out / "results.csv")
    assert set(tidy.status) == {"ok"}
    assert set(tidy.weights) == {"random"}
    assert {"prefill_latency_ms", "decode_latency_ms", "e2e_latency_ms", "decode_throughput_tok_s",
            "decode_bandwidth_frac", "prefill_tflop_s", "host_rss_peak_mib"} <= set(tidy.metric)
    assert "gpu_process_used_peak_mib" not in set(tidy.metric)  # no GPU: absent, never zero
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2 and (summary.validation == "pass").all()
    run = json.loads((out / "run.json").read_text())
    assert run["weights"] == "random" and run["environment"]["libraries"]["torch"]
    assert run["harness_overhead"]["direct_step_ms"] > 0
    assert "decode ms [95% CI]" in proc.stdout  # the summary table: medians with their interval ...
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100  # ... in at most 100 columns
    assert "Warning" not in proc.stderr and "W1" not in proc.stderr  # library warnings counted, not printed


@pytest.mark.slow
def test_multirun_over_two_values(tmp_path):
    # isolation=none: a multirun's jobs default to worker processes of their own (a fresh interpreter each, seconds
    # apiece); not what this checks (test_scaling.py and test_hostile_plugins.py run multiruns in them)
    proc = run_cli("-m", *FAST, "backend.attention=sdpa,math", "isolation=none", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p for p in tmp_path.iterdir() if (p / "run.json").exists())  # report/ holds merged results
    assert len(jobs) == 2
    infos = [json.loads((j / "run.json").read_text())["backend_info"] for j in jobs]
    assert sorted(i["attention_kernel_decode_probe"] for i in infos) == ["flash-cpu", "math-cpu"]
    # the label of what ran, read from a profile of the timed step (docs/profiling.md)
    assert sorted(i["attention_kernel_decode"] for i in infos) == [
        "aten::_scaled_dot_product_attention_math", "aten::_scaled_dot_product_flash_attention_for_cpu"]


@pytest.mark.slow
def test_task_validate_passes_and_writes_validation_csv(tmp_path):
    proc = run_cli("task=validate", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    v = pd.read_csv(tmp_path / "validation.csv")
    assert set(v.case) == {"equal_lengths", "left_padded"} and v.passed.all()


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["backend=hf-flashatn-staticcache"], "did you mean backend=hf-flashattn-staticcache"),
    (["model=tiny-lama"], "unknown model 'tiny-lama'"),
    (["grid.batch_size=[1]"], "unknown config key 'grid.batch_size'"),
    (["backend.compil=default"], "backend hf-flashattn-staticcache has no option 'backend.compil'"),
    (["grid.new_tokens=many"], "grid.new_tokens: 'many' is not an integer"),
    (["grid.batch_sizes=[]"], "grid.batch_sizes is empty"),
    (["grid.prompt_lens=[0,8]"], "grid.prompt_lens has values below 1"),
    (["grid.prompt_lens=[500]", "grid.new_tokens=64"], "model has 512"),
    (["model.dtype=float8"], "unknown model.dtype"),
    (["device=tpu"], "unknown device 'tpu'"),
    (["task=train"], "unknown task 'train'"),
    (["model.path=/nonexistent/ckpt"], "does not exist"),
    (["backend.compile=fastest"], "backend.compile=fastest is not an option of backend hf-flashattn-staticcache"),
])
def test_bad_input_is_one_line_exit_2(args, expected, tmp_path):
    proc = run_cli(*args, f"output_dir={tmp_path}/o")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("enginebench: error:") and "fix:" in lines[-1]
    assert expected in lines[-1]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_model_path_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    proc = run_cli(f"model.path={tmp_path}", f"output_dir={tmp_path}/o")
    assert proc.returncode == 2 and "has no weights" in proc.stderr


@pytest.mark.slow
def test_verbose_shows_traceback(tmp_path):
    proc = run_cli("--verbose", "task=train", f"output_dir={tmp_path}/o")
    assert proc.returncode == 2 and "Traceback" in proc.stderr
