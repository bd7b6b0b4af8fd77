"""Python API: run a job from code (notebooks, scripts) with the same config and checks as the command line.

    from harness.api import benchmark
    out = benchmark(["backend=onnxruntime", "grid.batch_sizes=[1,2]"], output_dir="outputs/nb/ort")
"""
from __future__ import annotations

from pathlib import Path

from harness.errors import UserError


def compose_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness.cli import CONF_DIR, _registry

    _registry()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def benchmark(overrides: list[str], output_dir: str | Path) -> Path:
    """Run one job (any task) into ``output_dir``; returns it. Raises UserError on bad input or a failed job."""
    from harness.cli import _registry
    from harness.config import check_config
    from harness.sweep import run_job

    cfg = compose_config([*overrides, f"output_dir={output_dir}"])
    check_config(cfg)
    code = run_job(cfg, Path(output_dir), _registry())
    if code != 0:
        raise UserError(f"the job in {output_dir} finished with status {code}", "see its results.csv / run.json")
    return Path(output_dir)
