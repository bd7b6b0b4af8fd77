"""An output directory belongs to one configuration and one writer (issue 18, points 1-3): reruns without
resume are refused, resume checks the configuration's fingerprint, a second concurrent writer fails fast."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from harness.errors import UserError
from harness.run.outdir import check_ownership, exclusive, fingerprint, first_difference
from helpers import FAST, ROOT, plugin_env, run_cli


def cfg_of(*overrides):
    from harness.api import compose_config

    given = any(o.startswith("output_dir=") for o in overrides)  # resume=true needs one to pass the checks
    return compose_config([*overrides, *([] if given else ["output_dir=/nonexistent/unused"])])


def earlier_run(out, *overrides):
    """A directory as a finished run with these overrides leaves it (run.json with its fingerprint, results)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps({"fingerprint": fingerprint(cfg_of(*overrides))}))
    from harness.record.results import ResultsWriter, rows_for_cell

    identity = {"backend": "b", "model": "m", "weights": "random", "dtype": "float32", "device": "cpu",
                "batch_size": 1, "prompt_len": 8, "new_tokens": 2}
    ResultsWriter(out).append_cell(rows_for_cell(identity, [], status="ok", error="", iterations=1))


def test_fingerprint_leaves_out_where_and_how_long():
    a = fingerprint(cfg_of("output_dir=/a", "measure.min_iters=2", "grid.batch_sizes=[1]", "isolation=process"))
    b = fingerprint(cfg_of("output_dir=/b", "resume=true", "measure.min_iters=9", "grid.batch_sizes=[1,8]"))
    assert a == b and "seed" in a and "backend.cache" in a and any(k.startswith("versions.") for k in a)
    assert first_difference(a, fingerprint(cfg_of("seed=5"))) == "seed was 0, now 5"


def test_rerun_into_a_non_empty_dir_is_refused(tmp_path):
    earlier_run(tmp_path)
    with pytest.raises(UserError) as err:
        check_ownership(cfg_of(), tmp_path)
    assert "already holds files" in err.value.problem
    assert "resume=true" in err.value.fix and "fresh output_dir" in err.value.fix and "overwrite=true" in err.value.fix
    check_ownership(cfg_of("overwrite=true"), tmp_path)


def test_hidden_entries_do_not_count(tmp_path):
    (tmp_path / ".hydra").mkdir()  # Hydra writes its config there before the job starts
    (tmp_path / ".enginebench.lock").write_text("")
    check_ownership(cfg_of(), tmp_path)


@pytest.mark.parametrize("change, named", [
    (["backend.cache=dynamic", "seed=5"], "backend.cache was 'static', now 'dynamic'"),  # first in order
    (["seed=5"], "seed was 0, now 5"),
    (["backend.cache=dynamic"], "backend.cache was 'static', now 'dynamic'"),
    (["model.hf_config.num_hidden_layers=3"], "model.hf_config.num_hidden_layers was 2, now 3"),
    (["backend=onnxruntime"], "backend.name was 'hf-flashattn-staticcache', now 'onnxruntime'"),
])
def test_resume_of_another_configuration_names_the_first_difference(tmp_path, change, named):
    earlier_run(tmp_path)
    with pytest.raises(UserError) as err:
        check_ownership(cfg_of("resume=true", *change), tmp_path)
    assert named in err.value.problem and "another configuration" in err.value.problem


def test_resume_of_the_same_configuration_passes(tmp_path):
    earlier_run(tmp_path, "seed=3")
    check_ownership(cfg_of("resume=true", "seed=3", "measure.min_iters=7", "grid.prompt_lens=[8,32]"), tmp_path)


def test_resume_of_a_missing_or_empty_dir_is_an_error(tmp_path):
    for out in (tmp_path / "missing", tmp_path):
        with pytest.raises(UserError) as err:
            check_ownership(cfg_of("resume=true"), out)
        assert "holds no earlier run" in err.value.problem and "drop resume=true" in err.value.fix
    check_ownership(cfg_of("resume=true"), tmp_path / "missing", multirun=True)  # a job that never started


def test_resume_of_a_run_without_fingerprint_is_refused(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(UserError) as err:
        check_ownership(cfg_of("resume=true"), tmp_path)
    assert "no configuration fingerprint" in err.value.problem


def test_checkpoint_change_is_a_different_configuration(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 512}))
    (ckpt / "model.safetensors").write_bytes(b"0" * 10)
    earlier_run(tmp_path / "out", f"model.path={ckpt}")
    (ckpt / "model.safetensors").write_bytes(b"1" * 20)  # the weights were replaced
    with pytest.raises(UserError) as err:
        check_ownership(cfg_of("resume=true", f"model.path={ckpt}"), tmp_path / "out")
    assert "model.checkpoint_fingerprint" in err.value.problem


def test_second_writer_fails_fast_naming_the_first(tmp_path):
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
            "from harness.run.outdir import exclusive\n"
            f"with exclusive({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as err:
            with exclusive(tmp_path):
                pass
        assert f"PID {holder.pid}" in err.value.problem and "another enginebench run" in err.value.problem
    finally:
        holder.kill()
        holder.wait()
    with exclusive(tmp_path):  # the holder is gone: its lock went with it
        assert json.loads((tmp_path / ".enginebench.owner").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".enginebench.owner").exists()


# --- end to end, through the command (the cases of issue 18, points 1-3) ---

def one_line_error(proc, expected):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("enginebench: error:") and expected in last, proc.stderr
    return last


@pytest.mark.slow  # runs the command
def test_rerun_without_resume_keeps_the_results_and_says_how(tmp_path):
    assert run_cli(*FAST, f"output_dir={tmp_path}").returncode == 0
    before = {f: (tmp_path / f).read_bytes() for f in ("results.csv", "summary.csv", "run.json")}
    last = one_line_error(run_cli(*FAST, "grid.batch_sizes=[1]", f"output_dir={tmp_path}"), "already holds files")
    assert "resume=true" in last and "overwrite=true" in last
    assert {f: (tmp_path / f).read_bytes() for f in before} == before  # nothing touched
    proc = run_cli(*FAST, "grid.batch_sizes=[1]", "overwrite=true", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert set(pd.read_csv(tmp_path / "results.csv").batch_size) == {1}  # replaced, as asked


@pytest.mark.slow  # runs the command
def test_resume_into_another_configuration_is_refused_and_run_json_kept(tmp_path):
    assert run_cli(*FAST, f"output_dir={tmp_path}").returncode == 0
    run_json = (tmp_path / "run.json").read_bytes()
    one_line_error(run_cli(*FAST, "resume=true", "backend.cache=dynamic", "seed=5", f"output_dir={tmp_path}"),
                   "backend.cache was 'static', now 'dynamic'")
    one_line_error(run_cli(*FAST, "resume=true", "model=tinyllama-1.1b", f"output_dir={tmp_path}"),
                   "another configuration: model.preset was 'tiny-llama', now 'tinyllama-1.1b'")
    assert (tmp_path / "run.json").read_bytes() == run_json
    proc = run_cli(*FAST, "resume=true", "measure.min_iters=3", f"output_dir={tmp_path}")  # measurement-only key
    assert proc.returncode == 0 and "nothing to run" in proc.stderr


@pytest.mark.slow  # runs the command
def test_resume_of_a_missing_dir_is_an_error(tmp_path):
    one_line_error(run_cli(*FAST, "resume=true", f"output_dir={tmp_path}/never-ran"), "holds no earlier run")
    assert not (tmp_path / "never-ran" / "results.csv").exists()


@pytest.mark.slow  # runs the command
def test_a_second_concurrent_writer_fails_fast_naming_the_first(plugin_site, tmp_path):
    from test_reliability import SLOW, _start, _wait_for_cells

    # the first run is held at its next prefill while the second starts (which takes seconds on a loaded machine)
    pause = tmp_path.parent / f"{tmp_path.name}.pause"
    held = [*SLOW, f"backend.pause_file={pause}"]
    first = _start(held, plugin_site, tmp_path)
    try:
        _wait_for_cells(tmp_path, 1, first)
        pause.touch()
        second = run_cli(*held, "resume=true", f"output_dir={tmp_path}", env=plugin_env(plugin_site))
        one_line_error(second, f"being written by another enginebench run (PID {first.pid}")
    finally:
        pause.unlink(missing_ok=True)
        first.wait(300)
    assert first.returncode == 0
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert tidy.groupby(["batch_size", "prompt_len", "metric"]).size().max() == 1  # no duplicated rows


@pytest.mark.slow  # runs the command
def test_multirun_jobs_sharing_output_dir_get_a_subdirectory_each(tmp_path):
    # isolation=none: a multirun's jobs default to worker processes of their own (a fresh interpreter each, seconds
    # apiece); not what this checks (test_scaling.py and test_hostile_plugins.py run multiruns in them)
    proc = run_cli("-m", *FAST, "seed=0,1", "isolation=none", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p.parent for p in tmp_path.glob("*/run.json"))
    assert len(jobs) == 2
    assert sorted(int(pd.read_csv(j / "results.csv").seed.iloc[0]) for j in jobs) == [0, 1]
    assert sorted(pd.read_csv(tmp_path / "report" / "results.csv").seed.unique()) == [0, 1]


@pytest.mark.slow  # runs the command
def test_resume_reruns_cells_that_failed_to_load_once_the_checkpoint_is_fixed(tmp_path):
    from harness.model.sources import ModelSource
    from helpers import tiny_model_cfg

    ckpt = tmp_path / "ckpt"
    ModelSource.from_config(tiny_model_cfg(), 0).build_fp32_cpu().save_pretrained(ckpt)
    good = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(b"\0" * 64)  # a broken download
    out = tmp_path / "out"
    args = [*FAST, f"model.path={ckpt}", f"output_dir={out}"]
    assert run_cli(*args).returncode == 1
    assert set(pd.read_csv(out / "summary.csv").status) == {"load_failed"}
    (ckpt / "model.safetensors").write_bytes(good)  # fixed
    # keeping the old rows would pair them with the new weights: refused, naming the checkpoint
    one_line_error(run_cli(*args, "resume=true", "retry_failed=false"), "model.checkpoint_fingerprint was")
    proc = run_cli(*args, "resume=true")
    assert proc.returncode == 0, proc.stderr
    assert "2 failed cell(s) run again" in proc.stderr
    assert set(pd.read_csv(out / "summary.csv").status) == {"ok"} and len(pd.read_csv(out / "summary.csv")) == 2
