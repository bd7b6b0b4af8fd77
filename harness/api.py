"""Python API: run a job from code (notebooks, scripts) with the same config, checks and job runner as the command
line (``isolation=process`` included).

    from harness.api import benchmark
    out = benchmark(["backend=onnxruntime", "grid.batch_sizes=[1,2]"], output_dir="outputs/nb/ort")
"""
from __future__ import annotations

from pathlib import Path

from harness.config.compose import compose_config
from harness.errors import JobFailed
from harness.record.runrecord import read_run
from harness.run.job import run_job

__all__ = ["benchmark", "compose_config"]


def benchmark(overrides: list[str], output_dir: str | Path) -> Path:
    """Run one job (any task) into ``output_dir``; returns it when every cell finished ok and every validation
    passed (exit status 0). Raises UserError on bad input (status 2), JobFailed when a cell or validation failed
    (status 1: ``.exit_code``, ``.summary``, ``.out_dir``; the files are complete), KeyboardInterrupt on Ctrl-C."""

    cfg = compose_config([*overrides, f"output_dir={output_dir}"])
    out = Path(output_dir)
    code = run_job(cfg, out)
    if code != 0:
        summary = read_run(out).outcome or ""
        raise JobFailed(out, code, summary or f"the job finished with status {code}")
    return out
