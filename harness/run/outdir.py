"""An output directory belongs to one configuration and to one writer at a time.

Without this, rerunning into a directory silently replaced its results, ``resume=true`` happily mixed rows of two
configurations, and two runs writing one directory duplicated rows. The rules (README, "Reliability"):

- run.json holds a *fingerprint* of everything that defines the rows: the config minus the keys that only say
  where to write, whether to resume, or how long to measure (:data:`NOT_IN_FINGERPRINT`), the checkpoint's
  fingerprint (path, sizes, mtimes) and the library versions.
- A directory that already holds files is refused unless ``resume=true`` (same fingerprint, first differing key
  named otherwise) or ``overwrite=true`` (enginebench's own result files are removed first).
- A changed fingerprint is accepted only when resume would keep no row of the earlier run (all of them failures
  that run again, e.g. after fixing a checkpoint that failed to load): then nothing can be contradicted.
- ``resume=true`` of a directory that holds no earlier run is an error, not a silent fresh start (except for a job
  of a resumed multirun that never started: it simply runs).
- A lock file makes a second writer fail at once, naming the process that holds the directory.
- A refused command writes nothing: the rules are checked before the lock file is made, and Hydra's ``.hydra/``
  files are written by the job once it owns the directory (:func:`save_hydra_config`). ``overwrite=true`` moves
  the earlier results aside and deletes them only once the new run has written its run.json
  (:func:`replacing`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from harness import progress
from harness.errors import UserError

LOCK_FILE = ".enginebench.lock"
OWNER_FILE = ".enginebench.owner"  # who holds the lock: pid, host, start time (the lock file itself stays empty)
# Files an enginebench job writes: what overwrite=true removes (nothing else in the directory is touched).
RESULT_FILES = ("results.csv", "summary.csv", "run.json", "validation.csv", "generation.json")
RESULT_DIRS = ("report", "samples")
# Keys that do not change what a row means: where and whether to write, how long and how to measure, how jobs
# share devices. grid.batch_sizes / grid.prompt_lens are out too: every row carries its cell, so a resumed run may
# add cells to the grid.
NOT_IN_FINGERPRINT = ("output_dir", "resume", "overwrite", "retry_failed", "measure", "isolation", "pin", "report",
                      "cache_dir", "grid.batch_sizes", "grid.prompt_lens")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else
                    {f"{prefix}{key}": value})
    return flat


def fingerprint(cfg) -> dict[str, Any]:
    """What defines the rows of a run with this config, as flat ``key: value`` pairs (stored in run.json)."""
    from harness.measure.environment import library_versions
    from harness.model.sources import ModelSource

    config = _flatten(cfg.to_dict())
    kept = {k: v for k, v in config.items()
            if not any(k == skip or k.startswith(skip + ".") for skip in NOT_IN_FINGERPRINT)}
    if cfg.model.path:  # a checkpoint: path, sizes and mtimes (cheap; a random preset is defined by its config)
        kept["model.checkpoint_fingerprint"] = ModelSource.from_config(cfg.model, cfg.seed).fingerprint()
    kept.update({f"versions.{name}": version for name, version in library_versions().items()})
    return kept


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first key (in the new config's order) whose value differs, in words; None when they agree."""
    for key in [*new, *(k for k in old if k not in new)]:
        if json.dumps(old.get(key), default=str) != json.dumps(new.get(key), default=str):
            was = old.get(key, "(not set)")
            now = new.get(key, "(not set)")
            return f"{key} was {was!r}, now {now!r}"
    return None


def holds_files(out_dir: Path) -> bool:
    """True when the directory has entries besides hidden ones (Hydra's .hydra/, our lock and probe files)."""
    return out_dir.is_dir() and any(not p.name.startswith(".") for p in out_dir.iterdir())


def remove_results(out_dir: Path) -> None:
    for name in RESULT_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for name in RESULT_DIRS:
        shutil.rmtree(out_dir / name, ignore_errors=True)


def _rows_to_keep(cfg, out_dir: Path) -> bool:
    """True when resume would keep rows of the earlier run (cells that are not failures to retry)."""
    from harness.record.results import RETRY_STATUSES, read_cells

    path = out_dir / "results.csv"
    rows = read_cells(path)[0] if path.is_file() else []
    retried = RETRY_STATUSES if cfg.retry_failed else ()
    return any(r.get("status") not in retried for r in rows)


def check_ownership(cfg, out_dir: Path, multirun: bool = False) -> dict[str, Any]:
    """Refuse to write ``out_dir`` with this config unless the rules above allow it; returns the fingerprint.

    Called before the job touches the directory (and, for a single run, before Hydra starts)."""
    out_dir = Path(out_dir)
    fp = fingerprint(cfg)
    fresh = "choose a fresh output_dir=PATH"
    if cfg.resume:
        run_json = out_dir / "run.json"
        if not run_json.is_file():
            if multirun and not holds_files(out_dir):
                return fp  # a job of the interrupted sweep that never started: it runs now
            raise UserError(f"resume=true, but {out_dir} holds no earlier run (no run.json)",
                            "give the output_dir of the run to resume, or drop resume=true to start a new run")
        try:
            old = json.loads(run_json.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError) as exc:
            raise UserError(f"resume=true, but {run_json} is unreadable ({type(exc).__name__})",
                            f"{fresh} (or overwrite=true to replace that run)") from exc
        if old is None:
            raise UserError(f"resume=true, but {run_json} has no configuration fingerprint (written by an older "
                            "enginebench), so its rows cannot be matched to this config",
                            f"{fresh} (or overwrite=true to replace that run)")
        difference = first_difference(old, fp)
        if difference and not _rows_to_keep(cfg, out_dir):
            # nothing finished to contradict (e.g. every cell failed to load before the checkpoint was fixed)
            progress.say(f"resume: the configuration changed ({difference}), but no finished cell would be kept; "
                         "every cell runs again")
        elif difference:
            raise UserError(f"resume=true into {out_dir}, which holds results of another configuration: "
                            f"{difference}", f"resume with the same settings, or {fresh}")
        return fp
    if holds_files(out_dir) and not cfg.overwrite:
        raise UserError(f"output directory {out_dir} already holds files (an earlier run's results would "
                            "be replaced)", f"add resume=true to continue that run, {fresh}, or add overwrite=true")
    return fp


@contextlib.contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for this process; a second writer fails at once, naming the holder.

    A UserError raised in the block (a refusal by :func:`check_ownership`) takes back what taking the lock
    created (the lock file, the directory when it is still empty), so a refused command leaves no trace."""
    out_dir = Path(out_dir)
    made_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    made_lock = not (out_dir / LOCK_FILE).exists()
    lock = FileLock(str(out_dir / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{out_dir} is being written by another enginebench run ({_owner(out_dir)})",
                        "wait for that run to finish, or choose another output_dir=PATH") from None
    owner = out_dir / OWNER_FILE
    try:
        owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        yield
    except UserError:
        if made_lock:  # (we hold it: no other writer can be using this lock file)
            owner.unlink(missing_ok=True)
            (out_dir / LOCK_FILE).unlink(missing_ok=True)  # still held: no other writer can have it
            if made_dir:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()  # only if empty
        raise
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


NEW_RESULTS = ("results.csv", "validation.csv", "generation.json")  # what a replacing run must have written


class Replacement:
    """``overwrite=true``: the earlier run's result files are moved into a hidden folder of the directory, not
    deleted; they are deleted once the new run has written results, and put back when it wrote none (it failed
    before its first cell, or was refused). ``restored`` says which happened."""

    def __init__(self, out_dir: Path, active: bool):
        self.out_dir, self.active, self.restored = Path(out_dir), active, False
        self.aside = self.out_dir / f".enginebench-replaced-{os.getpid()}"
        self.moved: list[str] = []

    def __enter__(self) -> "Replacement":
        names = [n for n in (*RESULT_FILES, *RESULT_DIRS) if (self.out_dir / n).exists()] if self.active else []
        if names:
            self.aside.mkdir(exist_ok=True)
            for name in names:
                if (self.out_dir / name).exists():
                    os.replace(self.out_dir / name, self.aside / name)
                    self.moved.append(name)
        return self

    def __exit__(self, *exc) -> None:
        if not self.moved:
            shutil.rmtree(self.aside, ignore_errors=True)
            return
        if any((self.out_dir / n).exists() for n in NEW_RESULTS):
            shutil.rmtree(self.aside, ignore_errors=True)
            return
        remove_results(self.out_dir)  # the new run's run.json, if it got that far
        for name in self.moved:
            os.replace(self.aside / name, self.out_dir / name)
        shutil.rmtree(self.aside, ignore_errors=True)
        self.restored = bool(self.moved)


def save_hydra_config(cfg, out_dir: Path) -> None:
    """Write ``.hydra/config.yaml`` and ``overrides.yaml``, as Hydra would, once the job owns ``out_dir``
    (conf/config.yaml turns Hydra's own early write off). Outside Hydra (the Python API) there is nothing to save."""
    import yaml

    from harness.record.results import atomic_write_bytes
    from harness.run.multirun import current

    launch = current()
    if not launch.under_hydra:
        return
    folder = Path(out_dir) / ".hydra"
    folder.mkdir(exist_ok=True)
    for name, content in (("config.yaml", cfg.to_dict()), ("overrides.yaml", list(launch.task_overrides))):
        atomic_write_bytes(folder / name, yaml.safe_dump(content, sort_keys=False).encode())


def _owner(out_dir: Path) -> str:
    try:
        info = json.loads((out_dir / OWNER_FILE).read_text())
        return f"PID {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its PID is not recorded yet"
