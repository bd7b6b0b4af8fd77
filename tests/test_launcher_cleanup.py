"""No process left behind: kill -9 or SIGTERM of a command running jobs through the parallel launchers we ship
(joblib's loky workers, submitit's local executor) ends every process it started — launcher workers, their
isolation children — within seconds, and nothing writes into the sweep afterwards. Real signals, real processes
(found by a tag in their environment, since a killed command's children are reparented)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from helpers import FAST, ROOT

pytestmark = pytest.mark.slow


def _tagged(tag: str) -> list[int]:
    """PIDs whose environment carries ``tag`` (every process the command started inherits it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if tag.encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out.append(f"{pid}: {command[:200]}")
        except OSError:
            continue
    return out


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


@pytest.mark.parametrize("launcher, sig", [
    ("enginebench_joblib", signal.SIGKILL),
    ("enginebench_joblib", signal.SIGTERM),
    ("enginebench_submitit_local", signal.SIGKILL),
])
def test_killing_the_command_ends_every_job_process(tmp_path, launcher, sig):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher" if "joblib" in launcher
                        else "hydra_plugins.hydra_submitit_launcher")
    tag = f"ENGINEBENCH_TEST_TAG={uuid.uuid4().hex}"
    sweep = tmp_path / "sweep"
    extra = ["hydra.launcher.gpus_per_node=0"] if "submitit" in launcher else ["hydra.launcher.n_jobs=2"]
    args = [sys.executable, "-m", "harness", "-m", f"hydra/launcher={launcher}", *extra, "seed=1,2",
            *[a for a in FAST if not a.startswith("measure.min_seconds")], "measure.min_seconds=600",
            "measure.max_seconds=1200",
            "validation.enabled=false", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", tag.split("=")[0]: tag.split("=")[1]}
    log = open(tmp_path / "stderr.txt", "w")
    command = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
                               start_new_session=True)
    try:
        # both jobs measuring: each wrote its run.json, and an isolation child runs the cells
        assert _wait_for(lambda: len(list(sweep.glob("*/run.json"))) == 2 and len(_tagged(tag)) >= 4, 240), \
            f"the sweep did not start: {(tmp_path / 'stderr.txt').read_text()[-2000:]}"
        time.sleep(2)
        os.kill(command.pid, sig)
        command.wait(timeout=60)
        assert _wait_for(lambda: not _tagged(tag), 20), f"left behind: {_describe(_tagged(tag))}"
        sizes = {p: p.stat().st_size for p in sweep.rglob("*") if p.is_file()}
        time.sleep(2)
        assert {p: p.stat().st_size for p in sweep.rglob("*") if p.is_file()} == sizes  # nothing writes on
    finally:
        log.close()
        for pid in _tagged(tag):  # only what this test started (its tag), should the test fail
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
