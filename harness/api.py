"""Python API: run a job from code (notebooks, scripts) with the same config, checks and job runner as the command
line (``isolation=process`` included).

    from harness.api import benchmark
    out = benchmark(["backend=onnxruntime", "grid.batch_sizes=[1,2]"], output_dir="outputs/nb/ort")
"""
from __future__ import annotations

from pathlib import Path

from harness.compose import compose_config
from harness.errors import UserError
from harness.job import run_job

__all__ = ["benchmark", "compose_config"]


def benchmark(overrides: list[str], output_dir: str | Path) -> Path:
    """Run one job (any task) into ``output_dir``; returns it. Raises UserError on bad input or a failed job."""
    cfg = compose_config([*overrides, f"output_dir={output_dir}"])
    code = run_job(cfg, Path(output_dir))
    if code != 0:
        raise UserError(f"the job in {output_dir} finished with status {code}", "see its results.csv / run.json")
    return Path(output_dir)
