"""device=pin's default lock folder is private to the user: created 0700 with 0600 lock files, and a folder
another user prepared — a symbolic link, or a directory they own — is refused in one line, untouched. Real
folders, a real symlink, a real chown (the tests run as root where chown to another uid is possible)."""
from __future__ import annotations

import os
import stat
import tempfile

import pytest

from harness.errors import UserError
from harness.run.pinning import claim_slot, cpu_slots, default_lock_dir


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_default_lock_folder_is_per_user_and_private(temp_dir):
    assert default_lock_dir() == temp_dir / f"enginebench-locks-{os.getuid()}"
    claim = claim_slot(cpu_slots(1), default_lock_dir())
    try:
        assert _mode(default_lock_dir()) == 0o700
        assert _mode(claim.lock.lock_file) & 0o077 == 0  # 0600 (less under a strict umask)
    finally:
        claim.release()


def test_an_open_folder_of_ours_is_closed(temp_dir):
    os.mkdir(default_lock_dir(), 0o777)
    os.chmod(default_lock_dir(), 0o1777)
    claim_slot(cpu_slots(1), default_lock_dir()).release()
    assert _mode(default_lock_dir()) == 0o700


def test_a_symlinked_lock_folder_is_refused_and_its_target_untouched(temp_dir):
    victim = temp_dir / "someone-elses"
    victim.mkdir(mode=0o700)
    os.symlink(victim, default_lock_dir())
    with pytest.raises(UserError, match="is a symbolic link") as err:
        claim_slot(cpu_slots(1), default_lock_dir())
    assert "pin.lock_dir" in err.value.fix and "\n" not in err.value.one_line()
    assert _mode(victim) == 0o700 and list(victim.iterdir()) == []


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_lock_folder_owned_by_another_user_is_refused(temp_dir):
    os.mkdir(default_lock_dir(), 0o700)
    os.chown(default_lock_dir(), 65534, 65534)
    with pytest.raises(UserError, match="belongs to another user"):
        claim_slot(cpu_slots(1), default_lock_dir())
    assert list(default_lock_dir().iterdir()) == []
