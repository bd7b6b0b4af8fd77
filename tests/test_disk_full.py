"""Disk full (issue 18, point 7): a real full filesystem (a small tmpfs in a private mount namespace) fills up
mid-sweep; the run ends with one line naming the directory and its free space, exit 1, the finished cells intact,
and resume finishes the sweep once there is room."""
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from harness.record.results import read_cells
from helpers import ROOT, plugin_env

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, os, subprocess, sys, time
mnt, site, out_copy = sys.argv[1:4]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], check=True)
out = os.path.join(mnt, "run")
env = {**os.environ, "PYTHONUNBUFFERED": "1"}
args = [sys.executable, "-m", "harness", "backend=fault", "backend.step_sleep_s=0.05", "grid.batch_sizes=[1,2]",
        "grid.prompt_lens=[8,16]", "grid.new_tokens=3", "measure.warmup=1", "measure.min_iters=3",
        "measure.min_seconds=0", "measure.overhead_steps=2", "output_dir=" + out]
proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
summary = os.path.join(out, "summary.csv")
while not (os.path.exists(summary) and os.path.getsize(summary) > 0) and proc.poll() is None:
    time.sleep(0.1)
fd = os.open(os.path.join(mnt, "filler"), os.O_WRONLY | os.O_CREAT)
for size in (65536, 1):  # take every free byte
    try:
        while True:
            os.write(fd, b"\0" * size)
    except OSError:
        pass
os.close(fd)
_, err = proc.communicate(timeout=300)
import shutil
shutil.copytree(out, out_copy)
os.remove(os.path.join(mnt, "filler"))  # room again: resume
resumed = subprocess.run(args + ["resume=true"], env=env, capture_output=True, text=True, timeout=300)
shutil.copytree(out, out_copy + "-resumed")
print(json.dumps({"code": proc.returncode, "stderr": err, "resumed_code": resumed.returncode,
                  "resumed_stderr": resumed.stderr}))
"""


def test_disk_full_mid_sweep_is_one_line_and_loses_nothing(plugin_site, tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a private tmpfs")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user+mount namespaces here: {probe.stderr.decode().strip()}")
    (tmp_path / "mnt").mkdir()
    env = {**__import__("os").environ, **plugin_env(plugin_site)}
    done = subprocess.run(["unshare", "-rm", sys.executable, "-c", SCRIPT, str(tmp_path / "mnt"), str(plugin_site),
                           str(tmp_path / "copy")], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["code"] == 1 and "Traceback" not in got["stderr"], got["stderr"]
    last = got["stderr"].strip().splitlines()[-1]
    assert last.startswith("enginebench: out of space writing") and "MiB free" in last and "resume=true" in last
    rows, skipped = read_cells(tmp_path / "copy" / "results.csv")
    assert skipped is None and rows  # the finished cells, and no torn one
    assert len(pd.read_csv(tmp_path / "copy" / "results.csv")) == len(rows)
    assert got["resumed_code"] == 0, got["resumed_stderr"]
    final = pd.read_csv(tmp_path / "copy-resumed" / "results.csv")
    assert len(final.groupby(["batch_size", "prompt_len"])) == 4
