"""A refused command changes nothing in the directory it was refused: not the results, not Hydra's .hydra/ files,
no lock file left behind. ``overwrite=true`` replaces the earlier results (samples included) only once the new run
has results to write; a run that ends before that puts the earlier ones back."""
from __future__ import annotations

import json

import pytest

from harness.errors import UserError
from harness.run.outdir import LOCK_FILE, Replacement, exclusive
from helpers import FAST, run_cli


def _earlier_run(folder):
    """A finished run of another configuration, as Hydra and enginebench leave it."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 12345\n")
    (folder / ".hydra" / "overrides.yaml").write_text("- seed=12345\n")
    (folder / "run.json").write_text(json.dumps({"fingerprint": {"seed": 12345}}))
    (folder / "results.csv").write_text("backend,status\nb,ok\n")
    (folder / "samples").mkdir()
    (folder / "samples" / "b1_p8_n2.npz").write_bytes(b"old samples")
    return folder


def _state(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_a_refused_resume_and_a_refused_second_writer_change_nothing(tmp_path):
    out = _earlier_run(tmp_path / "run")
    before = _state(out)
    proc = run_cli("resume=true", f"output_dir={out}", *FAST)  # another configuration's directory
    assert proc.returncode == 2 and "holds results of another configuration" in proc.stderr, proc.stderr
    assert _state(out) == before and not (out / LOCK_FILE).exists()
    with exclusive(out):  # a first writer holds the directory
        during = _state(out)
        proc = run_cli("overwrite=true", f"output_dir={out}", *FAST)
        assert _state(out) == during
    assert proc.returncode == 2 and "is being written by another enginebench run" in proc.stderr, proc.stderr


def test_a_refusal_inside_the_lock_takes_back_the_lock_file_and_the_new_directory(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(UserError):
        with exclusive(out):
            raise UserError("refused", "fix")
    assert not out.exists()


def test_overwrite_puts_the_earlier_results_back_when_the_new_run_wrote_none(tmp_path):
    out = _earlier_run(tmp_path / "run")
    before = {k: v[0] for k, v in _state(out).items()}
    with pytest.raises(RuntimeError):
        with Replacement(out, active=True) as replacement:
            (out / "run.json").write_text("{}")  # the new run started ...
            raise RuntimeError("... and failed before its first cell")
    assert replacement.restored and {k: v[0] for k, v in _state(out).items()} == before


def test_overwrite_replaces_results_and_samples_once_the_new_run_wrote_some(tmp_path):
    out = _earlier_run(tmp_path / "run")
    with Replacement(out, active=True) as replacement:
        (out / "results.csv").write_text("backend,status\nnew,ok\n")
    assert not replacement.restored and "new" in (out / "results.csv").read_text()
    assert not (out / "samples").exists()  # the earlier run's samples went with its results
    assert [p.name for p in out.iterdir() if p.name.startswith(".enginebench-replaced")] == []
