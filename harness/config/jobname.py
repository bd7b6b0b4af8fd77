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


def remember_sweep(overrides: list[str], jobs: int) -> None:
    """Record the keys this command line sweeps (``a=1,2``, ``range()``, ``choice()``) and the number of jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - precheck has already explained a bad override
        return
    os.environ[SWEPT_ENV] = ",".join(o.key_or_group for o in parsed if o.is_sweep_override())
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


def resolver(backend, task_overrides, num) -> str:
    """``${eb_job_dir:${backend},${hydra.overrides.task},${hydra.job.num}}`` in conf/config.yaml."""
    from omegaconf import OmegaConf

    try:
        backend = OmegaConf.to_container(backend, resolve=True)
        overrides = list(OmegaConf.to_container(task_overrides)) if task_overrides is not None else []
        return dir_name(job_label(backend, overrides))
    except Exception:  # noqa: BLE001 - never fail a job over its name: Hydra's numbered directory instead
        return f"{num}_{getattr(backend, 'name', 'job')}"


def register_job_dir(label) -> None:
    """``label(backend options dict) -> configuration label``: given by the plugin registry, which knows each
    backend's defaults (harness/plugin/plugins.py)."""
    from omegaconf import OmegaConf

    _labeller["label"] = label
    if not OmegaConf.has_resolver("eb_job_dir"):
        OmegaConf.register_new_resolver("eb_job_dir", resolver)
