"""``device=pin``: each job of a parallel sweep takes a GPU of its own for its whole lifetime.

A job claims a *slot* — a lock file named after a GPU's UUID (``pin.jobs_per_gpu`` slots per GPU, 1 by default) —
before it loads anything, and holds it until it ends. Slots are tried starting with GPU ``job number mod GPU count``
(so with a free machine job n lands on GPU n), then every other GPU; when all are taken the job waits for the first
one to free up. So n jobs on k GPUs form a queue with at most ``jobs_per_gpu`` jobs per GPU at once, whatever the
launcher's ``n_jobs`` is, and two separate sweeps of one user never share a GPU either. The locks are
``filelock`` locks (flock): the operating system drops them when their process ends, crash or kill included, so a
dead job never blocks a GPU.

The default lock folder is private to the user (``<temp dir>/enginebench-locks-<uid>``, 0700, lock files 0600):
a folder shared by every user let any of them block pinned sweeps forever by holding a lock, and one planted as a
symlink before the first sweep redirected the harness's chmod. Users who share GPUs on purpose give a common
``pin.lock_dir``.

On a machine without a GPU the job runs on the CPU; ``pin.cpu_slots=N`` then lets at most N jobs run at once there
(0: no limit), through the same locks.

The claimed device travels to the job's child processes (``isolation=process``) in the environment variable
``ENGINEBENCH_PINNED_DEVICE``, which :func:`pinned_device` reads.
"""
from __future__ import annotations

import os
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from harness.errors import UserError

PINNED_ENV = "ENGINEBENCH_PINNED_DEVICE"
POLL_S = 0.5  # how often a waiting job looks for a free slot again


@dataclass(frozen=True)
class Slot:
    """One place a job may run: ``device`` (cuda:N or cpu) and the lock file name that guards it."""

    device: str
    name: str


def gpu_slots(uuids: list[str], jobs_per_gpu: int) -> list[Slot]:
    """Slots of the visible GPUs (torch order): every GPU's first slot, then every GPU's second, ... so that jobs
    spread over the GPUs before any two share one."""
    return [Slot(f"cuda:{i}", f"gpu-{uuid.replace('GPU-', '')}-{k}") for k in range(jobs_per_gpu)
            for i, uuid in enumerate(uuids)]


def cpu_slots(count: int) -> list[Slot]:
    host = socket.gethostname()
    return [Slot("cpu", f"cpu-{host}-{k}") for k in range(count)]


def pin_device(job_num: int, gpu_count: int) -> str:
    """The GPU job ``job_num`` tries first given ``gpu_count`` visible GPUs (cpu when there are none)."""
    if gpu_count <= 0:
        return "cpu"
    return f"cuda:{job_num % gpu_count}"


def current_job_num() -> int:
    """Hydra's job number inside a multirun (0 outside one, and in the Python API)."""
    from harness.run.multirun import current

    return current().job_num


def default_lock_dir() -> Path:
    """A folder of this user's own in the temp dir: a folder shared by every user would let any of them hold the
    locks forever (or plant a symlink there before the first sweep creates it)."""
    return Path(tempfile.gettempdir()) / f"enginebench-locks-{os.getuid()}"


def _private_dir(lock_dir: Path) -> None:
    """Create the default lock folder 0700, or accept it only if it is a real directory (no symlink) owned by this
    user and closed to others: a folder another user prepared could hold their locks or point anywhere."""
    fix = f"remove '{lock_dir}' (it is not this user's private folder), or set pin.lock_dir=PATH"
    try:
        os.mkdir(lock_dir, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(lock_dir)
    if stat.S_ISLNK(info.st_mode):
        raise UserError(f"the GPU lock folder '{lock_dir}' is a symbolic link", fix)
    if not stat.S_ISDIR(info.st_mode):
        raise UserError(f"the GPU lock folder '{lock_dir}' is not a directory", fix)
    if info.st_uid != os.getuid():
        raise UserError(f"the GPU lock folder '{lock_dir}' belongs to another user (uid {info.st_uid})", fix)
    if info.st_mode & 0o077:
        os.chmod(lock_dir, 0o700, follow_symlinks=False)  # ours: close it


def _open_lock_dir(lock_dir: Path) -> Path:
    try:
        if lock_dir == default_lock_dir():
            _private_dir(lock_dir)
        else:
            lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the GPU lock folder '{lock_dir}' ({exc.strerror})",
                        "set pin.lock_dir=PATH to a writable local folder") from exc
    if not os.access(lock_dir, os.W_OK):
        raise UserError(f"the GPU lock folder '{lock_dir}' is not writable",
                        "set pin.lock_dir=PATH to a writable local folder (local disk, not NFS)")
    return lock_dir


def _rotated(slots: list[Slot], first: int) -> list[Slot]:
    per_round = len({s.device for s in slots}) or 1
    start = first % per_round
    rounds = [slots[i:i + per_round] for i in range(0, len(slots), per_round)]
    return [s for r in rounds for s in r[start:] + r[:start]]


@dataclass
class Claim:
    """A held slot; ``release()`` frees it (ending the process frees it too)."""

    slot: Slot
    lock: FileLock
    waited_s: float

    def release(self) -> None:
        self.lock.release()

    def record(self) -> dict:
        return {"device": self.slot.device, "slot": self.slot.name, "waited_s": round(self.waited_s, 3),
                "lock_file": self.lock.lock_file, "claimed_at": time.time()}


def claim_slot(slots: list[Slot], lock_dir: Path, first: int = 0, wait_s: float | None = None,
               on_wait=None) -> Claim:
    """Take the first free slot, trying ``slots[first]`` first; wait for one while all are taken.

    ``wait_s`` bounds the wait (None: as long as it takes); ``on_wait(n_busy)`` is called once when waiting starts.
    """
    lock_dir = _open_lock_dir(Path(lock_dir))
    order = _rotated(slots, first)
    started = time.monotonic()
    told = False
    while True:
        for slot in order:
            lock = FileLock(str(lock_dir / f"{slot.name}.lock"), mode=0o600, thread_local=False)  # others: no access
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            return Claim(slot, lock, time.monotonic() - started)
        waited = time.monotonic() - started
        if wait_s is not None and waited >= wait_s:
            raise UserError(f"no free GPU slot after {waited:.0f} s (all {len(order)} taken by other jobs)",
                            "raise pin.wait_s, lower the launcher's n_jobs, or raise pin.jobs_per_gpu")
        if not told and on_wait is not None:
            on_wait(len(order))
            told = True
        time.sleep(POLL_S)


def visible_gpu_uuids() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]


def slots_for(pin_cfg) -> list[Slot]:
    uuids = visible_gpu_uuids()
    if uuids:
        return gpu_slots(uuids, pin_cfg.jobs_per_gpu)
    return cpu_slots(pin_cfg.cpu_slots)


@contextmanager
def pinned(cfg) -> Iterator[dict | None]:
    """Hold a slot for the job of ``cfg`` while the block runs (a no-op unless ``device=pin``).

    Yields what run.json records about the claim (or None), and sets ``ENGINEBENCH_PINNED_DEVICE`` meanwhile."""
    if cfg.device != "pin":
        yield None
        return
    slots = slots_for(cfg.pin)
    if not slots:  # CPU without cpu_slots: no limit, nothing to hold
        yield {"device": "cpu", "slot": None, "waited_s": 0.0}
        return
    first = current_job_num()
    lock_dir = Path(cfg.pin.lock_dir).expanduser() if cfg.pin.lock_dir else default_lock_dir()

    def say_waiting(n_busy: int) -> None:
        print(f"enginebench: all {n_busy} device slots are taken; waiting for one to free up ...",
              file=sys.stderr, flush=True)

    claim = claim_slot(slots, lock_dir, first, cfg.pin.wait_s, say_waiting)
    print(f"enginebench: device=pin: {claim.slot.device} (slot {claim.slot.name}, waited {claim.waited_s:.1f} s)",
          file=sys.stderr, flush=True)
    previous = os.environ.get(PINNED_ENV)
    os.environ[PINNED_ENV] = claim.slot.device
    record = claim.record()
    try:
        yield record
    finally:
        record["released_at"] = time.time()  # with claimed_at: when this job held the device (unix seconds)
        if previous is None:
            os.environ.pop(PINNED_ENV, None)
        else:
            os.environ[PINNED_ENV] = previous
        claim.release()


def pinned_device(gpu_count: int) -> str:
    """What ``device=pin`` means in this process: the claimed device if a slot is held (here or by the parent
    process), else GPU ``job number mod count`` (the Python API, where nothing claims a slot)."""
    claimed = os.environ.get(PINNED_ENV)
    if claimed:
        return claimed
    return pin_device(current_job_num(), gpu_count)


def resolve_device(device: str) -> str:
    """The device a job runs on: ``auto`` and ``cuda`` named in full, ``pin`` a GPU claimed for the job, checked
    against the GPUs torch sees."""
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "pin":
        return pinned_device(torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device={device} was asked for but torch sees no CUDA GPU",
                            "use device=cpu or device=auto, or install a CUDA build of torch")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device={device} does not exist (this machine has {torch.cuda.device_count()} GPUs)",
                            f"use device=cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return device
    if device == "cpu":
        return device
    raise UserError(f"unknown device '{device}'", "use device=auto, pin, cpu, cuda or cuda:N")
