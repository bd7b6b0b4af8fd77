"""Device pinning for parallel sweeps: with ``device=pin`` job number *n* of a multirun uses GPU n mod count, so
Hydra's joblib launcher runs one job per GPU without a scheduler of our own."""
from __future__ import annotations


def pin_device(job_num: int, gpu_count: int) -> str:
    """The device of job ``job_num`` given ``gpu_count`` visible GPUs (cpu when there are none)."""
    if gpu_count <= 0:
        return "cpu"
    return f"cuda:{job_num % gpu_count}"


def current_job_num() -> int:
    """Hydra's job number inside a multirun (0 outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return int(HydraConfig.get().job.num)
    except Exception:  # noqa: BLE001 - not under Hydra (Python API) or not a multirun
        return 0
