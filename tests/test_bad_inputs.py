"""Inputs that used to pass or end in a traceback are one line, exit 2: NaN numbers (NaN turned the cell timeout
off), a sampling period that busy-loops, a GGUF file that is not one (or is empty, or comes with model.path), a
non-numeric max_position_embeddings, a disk already full at start, an unwritable report folder. A failed host
allocation is an ``error``, not a device ``oom``. Real files, a real full filesystem, a real failed allocation."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from harness.errors import UserError
from helpers import ROOT


def check(*overrides):
    from harness.api import compose_config

    compose_config(list(overrides))


@pytest.mark.parametrize("override, expected", [
    ("measure.min_seconds=nan", "measure.min_seconds=nan is not a finite number"),
    ("measure.max_seconds=nan", "measure.max_seconds=nan is not a finite number"),
    ("measure.cell_timeout_s=nan", "measure.cell_timeout_s=nan is not a finite number"),
    ("measure.max_seconds=inf", "measure.max_seconds=inf is not a finite number"),
    ("measure.memory_interval_ms=0", "the sampler would spin"),
    ("measure.memory_interval_ms=-5", "the sampler would spin"),
])
def test_nan_and_spinning_numbers_are_refused(override, expected):
    with pytest.raises(UserError) as err:
        check(override, "isolation=process")
    assert expected in err.value.one_line() and "\n" not in err.value.one_line()


@pytest.mark.parametrize("content, expected", [
    (b"", r"is empty \(0 bytes\)"),
    (b"PK\x03\x04 not gguf at all", "is not a GGUF file"),
])
def test_a_gguf_that_is_not_one_is_refused(tmp_path, content, expected):
    (tmp_path / "m.gguf").write_bytes(content)
    with pytest.raises(UserError, match=expected):
        check(f"+model.gguf={tmp_path}/m.gguf")


def _checkpoint(folder, **config):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_gguf_together_with_model_path_is_refused(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError) as err:
        check(f"+model.gguf={tmp_path}/m.gguf", f"model.path={_checkpoint(tmp_path / 'ckpt')}")
    assert "are given" in err.value.problem and "give one model source" in err.value.fix


@pytest.mark.parametrize("value", ["lots", None, 0, 1.5, True])
def test_a_non_numeric_max_position_embeddings_is_refused(tmp_path, value):
    with pytest.raises(UserError, match="max_position_embeddings is .* not a positive whole number"):
        check(f"model.path={_checkpoint(tmp_path, max_position_embeddings=value)}")


def test_an_unwritable_report_folder_is_one_line(tmp_path, capsys):
    from harness.report.cli import main

    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as code:
        main([str(tmp_path), "--out", str(tmp_path / "a-file" / "report")])
    assert code.value.code == 2
    assert capsys.readouterr().err.strip().startswith("enginebench: error: cannot write the report into")


def test_a_failed_host_allocation_is_an_error_not_oom():
    from harness.run.sweep import is_oom

    try:
        torch.empty(2**52, dtype=torch.uint8)  # 4 PiB: the CPU allocator refuses
    except RuntimeError as exc:
        assert not is_oom(exc)
    assert not is_oom(MemoryError()) and is_oom(torch.OutOfMemoryError("CUDA out of memory"))


FULL_DISK = r"""
import os, subprocess, sys
mnt = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], check=True)
fd = os.open(os.path.join(mnt, "filler"), os.O_WRONLY | os.O_CREAT)
for size in (4096, 1):  # take every free byte
    try:
        while True:
            os.write(fd, b"\0" * size)
    except OSError:
        pass
os.close(fd)
sys.path.insert(0, sys.argv[2])
from omegaconf import OmegaConf
from harness.errors import UserError
from harness.config.input_checks import check_free_space
for place in ("output_dir", "cache_dir"):
    cfg = OmegaConf.create({place: os.path.join(mnt, "sub", "dir")})
    try:
        check_free_space(cfg)
        print(place, "accepted")
    except UserError as err:
        print(place, err.one_line())
"""


def test_a_disk_already_full_at_start_is_refused():
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs user+mount namespaces (unshare) for a private tmpfs")
    import tempfile

    with tempfile.TemporaryDirectory() as mnt:
        done = subprocess.run(["unshare", "-rm", sys.executable, "-c", FULL_DISK, mnt, str(ROOT)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("output_dir enginebench: error: the disk of the output directory")
    assert lines[1].startswith("cache_dir enginebench: error: the disk of the artifact cache")
    assert all("is full" in line and "(fix: " in line for line in lines)
