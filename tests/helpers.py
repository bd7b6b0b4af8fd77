"""Helpers shared by the tests: the tiny model's config, opening a backend directly, running the CLI, and
installing the test plugin packages (tests/plugins/). Fixtures live in conftest.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = yaml.safe_load((ROOT / "conf" / "model" / "tiny-llama.yaml").read_text())


def tiny_model_cfg(**hf_overrides):
    cfg = {"preset": "tiny-llama", "path": None, "dtype": None, "hf_config": {**TINY["hf_config"], **hf_overrides}}
    return cfg


def open_backend(registry, name, model_cfg=None, options=None, max_batch=4, max_seq=64, seed=0,
                 dtype=torch.float32, device="cpu", tmp_cache=None, quant=None):
    from harness.model.sources import ModelSource
    from harness.plugin.loadspec import LoadSpec
    from harness.plugin.options import check_options

    source = ModelSource.from_config(model_cfg or tiny_model_cfg(), seed)
    opts = {**registry.defaults(name), **(options or {})}
    check_options(name, registry.option_classes[name], opts)  # as the command line checks every job
    handle = registry.open(name)
    spec = LoadSpec(model=source, dtype=dtype, device=device, options=opts, max_batch=max_batch, max_seq=max_seq,
                    **({"cache_dir": Path(tmp_cache)} if tmp_cache else {}), **({"quant": quant} if quant else {}))
    info = handle.load(spec=spec)
    return handle, source, info


SLOW_TESTS: set[str] = set()  # node ids of the tests marked slow (filled by conftest.py at collection)


def require_slow_mark(what: str) -> None:
    """A fresh interpreter costs seconds: only tests marked ``@pytest.mark.slow`` may start one."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    if current and SLOW_TESTS and current not in SLOW_TESTS:
        raise AssertionError(f"{current} calls {what} (a fresh interpreter): mark it @pytest.mark.slow")


def run_cli(*args, cwd=None, env=None, timeout=600, stdin=None):
    """Run ``python -m harness`` with arguments (``stdin``: text piped in); returns CompletedProcess (text).
    A process of its own, forked from a warm interpreter where it can be (warm_python.py)."""
    require_slow_mark("run_cli")
    return run_python_module("harness", *args, cwd=cwd, env=env, timeout=timeout, stdin=stdin)


def run_python_module(module: str, *args, cwd=None, env=None, timeout=600, stdin=None):
    """``python -m module args`` in ``cwd`` (default: the repository), the environment updated with ``env``."""
    from warm_python import run_module

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return run_module(module, *args, cwd=cwd or ROOT, env=full_env, timeout=timeout, stdin=stdin)


def run_report_cli(*args, env=None, timeout=300):
    """``python -m harness.report.cli`` with arguments (paths as they are); returns CompletedProcess (text)."""
    return run_python_module("harness.report.cli", *map(str, args), env=env, timeout=timeout)


FAST = ["grid.batch_sizes=[1,2]", "grid.prompt_lens=[8]", "grid.new_tokens=3", "measure.warmup=1",
        "measure.min_iters=2", "measure.min_seconds=0", "measure.overhead_steps=4"]


def install_plugin_packages(target: Path, packages=("toy_backend_pkg", "fault_backend_pkg")) -> Path:
    """pip-install test plugin packages (tests/plugins/) into ``target``: real entry points, real install."""
    require_slow_mark("install_plugin_packages")
    import shutil

    for pkg in packages:
        src = target.parent / f"src-{pkg}"
        shutil.copytree(ROOT / "tests" / "plugins" / pkg, src, dirs_exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(src)], check=True)
    return target


def plugin_env(site: Path, **extra) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), **extra}


def broken_backends():
    """The backends of tests/plugins/broken_backend_pkg, imported from its source (for in-process contract tests)."""
    path = str(ROOT / "tests" / "plugins" / "broken_backend_pkg")
    if path not in sys.path:
        sys.path.insert(0, path)
    import broken_backend

    return broken_backend


def installed_tensorrt():
    """Full TensorRT's module where installed, else TensorRT-RTX's bindings (builds engines on CPU), else None."""
    for name in ("tensorrt", "tensorrt_rtx_bindings"):
        try:
            return __import__(name)
        except ImportError:
            continue
    return None
