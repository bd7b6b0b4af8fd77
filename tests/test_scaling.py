"""Sweeps over several devices (docs/scaling.md): device=pin's per-GPU locks (real lock files, real processes),
the queue of more jobs than slots, a crashing or failing job that leaves the others running, resume of a multirun,
and the Slurm path end to end through submitit's local executor.

GPU slots are named by GPU UUID; here they get made-up UUIDs, but go through the same claim_slot() that a job on
a GPU machine uses. The end-to-end tests use pin.cpu_slots, the CPU form of the same locks."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from harness.errors import UserError
from harness.run.pinning import (
    PINNED_ENV,
    claim_slot,
    cpu_slots,
    gpu_slots,
    pin_device,
    pinned_device,
)
from helpers import ROOT, plugin_env, run_cli

FAST = ["grid.batch_sizes=[1,2]", "grid.prompt_lens=[8]", "grid.new_tokens=3", "measure.warmup=1",
        "measure.min_iters=2", "measure.min_seconds=0", "measure.overhead_steps=4", "validation.enabled=false"]


def test_first_choice_is_job_number_mod_gpu_count():
    assert [pin_device(n, 4) for n in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert pin_device(3, 0) == "cpu"


def test_jobs_take_free_gpus_then_wait(tmp_path):
    slots = gpu_slots(["GPU-aaaa", "GPU-bbbb"], jobs_per_gpu=1)
    first = claim_slot(slots, tmp_path, first=1)
    assert first.slot.device == "cuda:1"  # job 1 on a free machine: GPU 1
    second = claim_slot(slots, tmp_path, first=1)
    assert second.slot.device == "cuda:0"  # its GPU is taken: the other one, not a second job on GPU 1
    with pytest.raises(UserError, match="no free GPU slot"):
        claim_slot(slots, tmp_path, first=0, wait_s=0.3)  # both taken: a third job waits (here: gives up)
    first.release()
    third = claim_slot(slots, tmp_path, first=0, wait_s=0.3)
    assert third.slot.device == "cuda:1"
    second.release(), third.release()


def test_jobs_per_gpu_spreads_before_sharing(tmp_path):
    slots = gpu_slots(["GPU-aaaa", "GPU-bbbb"], jobs_per_gpu=2)
    claims = [claim_slot(slots, tmp_path, first=0, wait_s=0) for _ in range(4)]
    assert [c.slot.device for c in claims] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert len({c.slot.name for c in claims}) == 4
    for c in claims:
        c.release()


HOLDER = """
import sys, time
from pathlib import Path
from harness.run.pinning import claim_slot, gpu_slots
claim = claim_slot(gpu_slots(["GPU-aaaa"], 1), Path(sys.argv[1]))
print("holding", claim.slot.device, flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(lock_dir, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(seconds)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().startswith("holding cuda:0")
    return proc


def test_queued_job_starts_when_the_gpu_frees_up(tmp_path):
    holder = _holder(tmp_path, 1.5)
    try:
        t0 = time.monotonic()
        claim = claim_slot(gpu_slots(["GPU-aaaa"], 1), tmp_path, wait_s=60)
        assert claim.slot.device == "cuda:0" and claim.waited_s > 0.5 and time.monotonic() - t0 < 30
        assert holder.wait(timeout=30) == 0
        claim.release()
    finally:
        holder.kill()


def test_a_killed_job_frees_its_gpu(tmp_path):
    holder = _holder(tmp_path, 600)
    with pytest.raises(UserError):
        claim_slot(gpu_slots(["GPU-aaaa"], 1), tmp_path, wait_s=0.2)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    claim = claim_slot(gpu_slots(["GPU-aaaa"], 1), tmp_path, wait_s=10)  # the OS dropped the dead job's lock
    assert claim.slot.device == "cuda:0"
    claim.release()


def test_claimed_device_reaches_child_processes(monkeypatch):
    monkeypatch.setenv(PINNED_ENV, "cuda:1")
    assert pinned_device(gpu_count=2) == "cuda:1"  # what resolve_device('pin') returns in an isolation worker
    monkeypatch.delenv(PINNED_ENV)
    assert pinned_device(gpu_count=2) == "cuda:0"  # no claim (Python API): job 0's first choice
    assert [s.device for s in cpu_slots(2)] == ["cpu", "cpu"]


@pytest.mark.slow
def test_resume_of_a_multirun_needs_its_sweep_dir(tmp_path):
    proc = run_cli("-m", "resume=true", "seed=1,2", *FAST, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("enginebench: error: resume=true in a multirun")
    assert "hydra.sweep.dir" in proc.stderr


def _runs(sweep):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/run.json"))}


@pytest.mark.slow
def test_queue_crash_and_resume_with_joblib(plugin_site, tmp_path):
    """Two jobs, one CPU slot, two joblib workers: they run one after the other; a segfault in one job costs one
    cell and the other job still runs; the report merges both. resume=true then runs only the job that is missing."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    crashing = "fault[crash_at=[2x8]]"  # jobs are named by configuration label (harness/config/jobname.py)
    cmd = ["-m", "hydra/launcher=enginebench_joblib", "device=pin", "pin.cpu_slots=1", f"pin.lock_dir={tmp_path}/l",
           "backend=fault", "backend.crash_at=[2x8],[]", *FAST, f"hydra.sweep.dir={sweep}"]
    proc = run_cli(*cmd, env=plugin_env(plugin_site))
    assert proc.returncode == 1, proc.stderr  # the crashed cell fails job 0; the sweep exits with its worst job
    runs = _runs(sweep)
    assert sorted(runs) == ["fault", crashing]
    (a, b) = sorted((r["pin"]["claimed_at"], r["pin"]["released_at"]) for r in runs.values())
    assert a[1] <= b[0], "two jobs held the one slot at once"
    assert all(r["isolation"]["mode"] == "process" for r in runs.values())
    assert {name: r["exit_code"] for name, r in runs.items()} == {crashing: 1, "fault": 0}
    tidy = pd.read_csv(sweep / "report" / "results.csv")
    status = tidy.groupby(["seed", "run_id", "batch_size"]).status.first()
    assert status[(0, crashing, 2)] == "crashed" and status[(0, crashing, 1)] == "ok"
    assert set(status.loc[(0, "fault")]) == {"ok"}

    # job 0 is lost (a deleted directory), job 1 is complete: resume runs job 0 only; job 1 loads nothing
    done = (sweep / "fault" / "results.csv").read_text()
    shutil.rmtree(sweep / crashing)
    resumed = run_cli(*cmd, "resume=true", env=plugin_env(plugin_site))
    assert resumed.returncode == 1, resumed.stderr  # job 0's cell crashes again when it is re-run
    assert "resume: all 2 cells of fault are in" in resumed.stderr
    loads = [line for line in resumed.stderr.splitlines() if line.startswith("loading fault")]
    assert len([line for line in loads if ": done in" not in line]) == 1  # a start line (and maybe its end)
    assert (sweep / "fault" / "results.csv").read_text() == done
    again = pd.read_csv(sweep / crashing / "summary.csv").set_index("batch_size").status
    assert again[1] == "ok" and again[2] == "crashed"
    assert len(pd.read_csv(sweep / "report" / "comparison.csv")) == 2


@pytest.mark.slow
def test_submitit_local_runs_jobs_apart_and_gathers_one_report(plugin_site, tmp_path):
    """The Slurm launcher's path (submitit pickles each job, runs it in its own process, the launching command
    gathers them) through submitit's local executor: a job that fails (a missing library: exit 2) does not stop
    the other, the report holds the job that ran, and the command's exit status is the worst of its jobs."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "hydra/launcher=enginebench_submitit_local", "hydra.launcher.gpus_per_node=0",
                   "backend=fault", "backend.missing_library=true,false", "grid.batch_sizes=[1]", *FAST[1:],
                   f"hydra.sweep.dir={sweep}", env=plugin_env(plugin_site))
    assert proc.returncode == 2, proc.stderr
    runs = _runs(sweep)
    missing = "fault[missing_library=True]"  # jobs are named by configuration label (harness/config/jobname.py)
    assert runs[missing]["exit_code"] == 2 and "fault_native_lib" in runs[missing]["error"]
    assert runs["fault"]["exit_code"] == 0 and runs["fault"]["isolation"]["mode"] == "process"
    assert runs[missing]["environment"]["hostname"]  # each job wrote its own run.json from its own process
    tidy = pd.read_csv(sweep / "report" / "results.csv")
    assert set(tidy.run_id) == {"fault"} and set(tidy.status) == {"ok"}
    assert (sweep / ".submitit").is_dir()


@pytest.mark.slow
def test_bad_pin_option_is_one_line(tmp_path):
    proc = run_cli("device=pin", "pin.jobs_per_gpu=0", f"output_dir={tmp_path}/o")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("enginebench: error: pin.jobs_per_gpu=0 is below 1")
