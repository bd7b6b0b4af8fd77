"""Artifact cache repair (issue 18, point 6): whatever damage the cache shows, the next run rebuilds the artifact
instead of failing, and build directories left by a killed build are swept."""
import json
import os
import subprocess
import sys
import time

import pytest

from harness.model.artifacts import MANIFEST, get_or_build, key_hash, sweep_stale_builds
from helpers import ROOT

KEY = {"k": 18}


def build(tmp):
    (tmp / "payload.bin").write_bytes(b"whole")
    return {"what": "payload"}


def fresh(root):
    """A good artifact, built once; returns its directory."""
    art = get_or_build(root, "test", KEY, build, log=lambda m: None)
    assert not art.reused
    return art.directory


def rebuilt(root) -> list[str]:
    logs = []
    art = get_or_build(root, "test", KEY, build, log=logs.append)
    assert not art.reused and (art.directory / "payload.bin").read_bytes() == b"whole"
    assert json.loads((art.directory / MANIFEST).read_text())["meta"]["what"] == "payload"
    assert get_or_build(root, "test", KEY, build, log=lambda m: None).reused  # repaired for good
    return logs


@pytest.mark.parametrize("manifest, problem", [
    (b"{}", "incomplete manifest"),
    # named: each pytest-xdist worker collects its own random bytes, and the workers' test ids must agree
    pytest.param(os.urandom(64) + b"\xff\xfe", "unreadable manifest", id="random-bytes-unreadable manifest"),
    (b"[1, 2]", "incomplete manifest"),
    (b'{"files": {"payload.bin": {"size": "5"}}, "meta": {}}', "lacks its size or sha256"),
    (b'{"files": [], "meta": {}}', "incomplete manifest"),
])
def test_damaged_manifest_is_rebuilt(tmp_path, manifest, problem):
    directory = fresh(tmp_path)
    (directory / MANIFEST).write_bytes(manifest)
    logs = rebuilt(tmp_path)
    assert any("damaged" in m and problem in m for m in logs), logs


def test_a_file_where_the_artifact_directory_should_be_is_replaced(tmp_path):
    directory = fresh(tmp_path)
    import shutil

    shutil.rmtree(directory)
    directory.write_bytes(b"not a directory")
    logs = rebuilt(tmp_path)
    assert any("not a directory" in m for m in logs), logs


def test_a_file_where_the_kind_directory_should_be_is_replaced(tmp_path):
    (tmp_path / "test").write_bytes(b"oops")
    assert not get_or_build(tmp_path, "test", KEY, build, log=lambda m: None).reused


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_build_dir_of_a_dead_process_is_swept(tmp_path):
    root = tmp_path / "test"
    root.mkdir()
    stale = root / f".tmp-{key_hash({'other': 1})}-{_dead_pid()}"
    stale.mkdir()
    (stale / "half.onnx").write_bytes(b"x" * 100)
    live = root / f".tmp-{key_hash({'other': 2})}-{os.getpid()}"  # a build in progress: kept
    live.mkdir()
    fresh(tmp_path)
    assert not stale.exists() and live.exists()


def test_build_killed_with_sigkill_leaves_nothing_behind_after_the_next_run(tmp_path):
    code = ("import sys, time; from pathlib import Path; from harness.model.artifacts import get_or_build\n"
            "def build(tmp):\n    (tmp / 'part').write_bytes(b'x'); print('building', flush=True); time.sleep(60)\n"
            f"get_or_build(Path({str(tmp_path)!r}), 'test', {KEY!r}, build)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "building"
    assert len(list((tmp_path / "test").glob(".tmp-*"))) == 1
    proc.kill()
    proc.wait()
    time.sleep(0.1)
    fresh(tmp_path)
    assert list((tmp_path / "test").glob(".tmp-*")) == []
    assert sweep_stale_builds(tmp_path / "test", log=lambda m: None) == []
