"""What a job of a multirun is called: on the console ("job 2 of 4: onnxruntime[attention=gqa]") and as its
subdirectory of the sweep directory.

The name is the configuration label (backend plus every option that differs from its defaults, the label reports
use) followed by the values of the other keys the command line sweeps (``model=tiny-gpt2``), so two jobs never
share a directory and a reader knows which is which without opening run.json. The command line
(:func:`remember_sweep`) records which keys it sweeps and how many jobs there are in the environment, which
Hydra's parallel launchers pass on to the processes that run the jobs.
"""
from __future__ import annotations

import os
import re

SWEPT_ENV = "ENGINEBENCH_SWEPT_KEYS"
JOBS_ENV = "ENGINEBENCH_SWEEP_JOBS"
_labeller = {"label": lambda backend: str(backend["name"])}  # replaced by register_job_dir


def remember_sweep(swept_keys: list[str] | None, jobs: int) -> None:
    """Record the keys this command line sweeps (harness.compose.swept_keys; None: it did not parse) and the number
    of jobs."""
    if swept_keys is None:
        return
    os.environ[SWEPT_ENV] = ",".join(swept_keys)
    os.environ[JOBS_ENV] = str(jobs)


def job_count() -> int | None:
    value = os.environ.get(JOBS_ENV, "")
    return int(value) if value.isdigit() else None


def job_label(backend: dict, task_overrides: list[str]) -> str:
    """The configuration label, then ``key=value`` of each other swept key of this job."""
    try:
        label = _labeller["label"](backend)
    except Exception:  # noqa: BLE001 - an unknown backend (precheck says so): its bare name
        label = str(backend.get("name", "job"))
    swept = os.environ.get(SWEPT_ENV)
    keys = set(swept.split(",")) if swept is not None else None
    others = []
    for override in task_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "backend" or key.startswith("backend.") or key in ("output_dir", "resume", "overwrite"):
            continue
        if keys is None or key in keys:
            others.append(override)
    return " ".join([label, *others])


def dir_name(label: str) -> str:
    """``onnxruntime[attention=gqa] model=x`` -> ``onnxruntime[attention=gqa],model=x``: no spaces, quotes or
    slashes."""
    name = re.sub(r"[\'\"]", "", label).replace(", ", ",").replace(" ", ",")
    name = re.sub(r"[^A-Za-z0-9._=,\[\]+-]", "_", name)
    return name[:200]


def register_job_dir(label) -> None:
    """``label(backend options dict) -> configuration label``: given by the plugin registry, which knows each
    backend's defaults (harness/plugins.py). The folder's name comes from conf/config.yaml's ``eb_job_dir``
    resolver (harness/compose.py)."""
    _labeller["label"] = label
