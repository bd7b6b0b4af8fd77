"""run.json as a typed record: :class:`RunRecord`, written and read back here and nowhere else.

run.json says what a run was (the resolved config, the environment, the model's files, the configuration's label)
and how it went (load time, validation, overhead, the machine's state, the exit status and outcome line). Its
fields are named below with their types; a key this version does not name (a newer file, or an older one's) is
kept in ``extra`` and written back unchanged, so reading and rewriting a run.json never loses anything.

Versions: 1 is every run.json written before the record had a version (the committed results under docs/results);
2 adds ``version`` and nothing else, so version-1 files read as they are. A file that is missing, torn or not a
JSON object reads as an empty record (``RunRecord.readable`` False).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from harness.record.results import atomic_write_text

VERSION = 2
FILE = "run.json"


@dataclass
class RunRecord:
    version: int = VERSION
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config (every key, as composed)
    environment: Optional[dict[str, Any]] = None  # GPU, CPU, library versions, git commit
    device: Optional[str] = None
    weights: Optional[str] = None  # random | checkpoint (ModelSource.describe, with the three below)
    checkpoint: Optional[str] = None
    gguf_file: Optional[str] = None
    gguf_sha256: Optional[str] = None
    model_fingerprint: Optional[str] = None
    configuration: Optional[str] = None  # the label reports use: backend[options that differ from the defaults]
    backend_defaults: Optional[dict[str, Any]] = None
    backend_provided_by: Optional[str] = None
    machine_state: Optional[dict[str, Any]] = None  # "start" and "end" readings
    fingerprint: Optional[dict[str, Any]] = None  # what resume=true compares (harness/run/outdir.py)
    load_seconds: Optional[float] = None
    backend_info: Optional[dict[str, Any]] = None
    validation: Optional[list[dict[str, Any]]] = None  # validation.csv's rows
    validation_error: Optional[str] = None  # the validation died or timed out (isolation=process)
    peak_copy_bandwidth_gb_s: Optional[float] = None
    harness_overhead: Optional[dict[str, Any]] = None
    load_error: Optional[str] = None
    load_traceback: Optional[str] = None  # the failed load's traceback (its last lines): the one line may not say where
    close_error: Optional[str] = None
    isolation: Optional[dict[str, Any]] = None  # mode, restarts, worker_pids
    exit_code: Optional[int] = None
    error: Optional[str] = None  # what ended the job early
    outcome: Optional[str] = None  # the one outcome line
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not name, kept as they are
    readable: bool = field(default=True, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "readable"}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("version", 1)  # written before run.json had a version
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every named field that is set (not None), then ``extra``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "readable")}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}

    def get(self, key: str, default: Any = None) -> Any:
        """A field by name, or a key of ``extra`` (for readers of keys this version does not name)."""
        value = getattr(self, key, None) if key not in ("extra", "readable") else None
        if value is None:
            value = self.extra.get(key)
        return default if value is None else value


def read_run(out_dir: Path) -> RunRecord:
    """The run.json of ``out_dir``; an empty, unreadable record when it is missing, torn or not an object."""
    try:
        data = json.loads((Path(out_dir) / FILE).read_text())
    except (OSError, ValueError):
        return RunRecord(readable=False)
    if not isinstance(data, dict):
        return RunRecord(readable=False)
    return RunRecord.from_dict(data)


def write_run(out_dir: Path, record: RunRecord | dict[str, Any]) -> None:
    """Write run.json atomically (a reader never sees half of it); a dict is typed first, and stamped with the
    current version."""
    if isinstance(record, dict):
        record = RunRecord.from_dict({**record, "version": VERSION})
    atomic_write_text(Path(out_dir) / FILE, json.dumps(record.to_dict(), indent=2, default=str) + "\n")


def update_run(out_dir: Path, **fields: Any) -> None:
    """Set some fields of an existing run.json (unset ones are left as they are; None values are skipped)."""
    record = read_run(out_dir)
    data = {**record.to_dict(), **{k: v for k, v in fields.items() if v is not None}, "version": VERSION}
    write_run(out_dir, data)
