"""Hydra stays at the edge: only the command line, composition and the multirun callback import Hydra or
OmegaConf, and what they hand on is a frozen JobSpec whose backend options are the backend's own dataclass."""
from __future__ import annotations

import ast
import dataclasses
import pickle
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EDGE = {"harness/cli.py", "harness/config/compose.py", "harness/report/callback.py"}


def _imports_hydra(path: Path) -> bool:
    """Any import of hydra or omegaconf in the module, at its top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name.split(".")[0] in ("hydra", "omegaconf") for name in names):
            return True
    return False


def test_at_most_three_named_modules_import_hydra_or_omegaconf():
    importing = {str(p.relative_to(ROOT)) for folder in ("harness", "backends") for p in (ROOT / folder).rglob("*.py")
                 if _imports_hydra(p)}
    assert importing, "the scan found no Hydra import at all: the command line must have one"
    assert len(importing) <= 3, sorted(importing)
    assert importing <= EDGE | {"harness/run/multirun.py"}, sorted(importing - EDGE)


def test_the_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from omegaconf import OmegaConf\n    return OmegaConf\n")
    assert _imports_hydra(module)
    module.write_text("import json\nHYDRA = 'hydra-core'\n")  # a name in a string is not an import
    assert not _imports_hydra(module)


def test_job_spec_is_frozen_and_carries_the_backends_own_options():
    from harness.api import compose_config
    from harness.config.schema import JobSpec
    from harness.plugin.plugins import registry

    spec = compose_config(["backend=onnxruntime", "backend.attention=gqa", "grid.batch_sizes=[1,2]"])
    assert type(spec) is JobSpec
    options_class = registry().option_classes["onnxruntime"]
    assert type(spec.backend.options) is options_class and spec.backend.options.attention == "gqa"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.grid.new_tokens = 1
    assert spec.to_dict()["backend"] == {"name": "onnxruntime", **dataclasses.asdict(spec.backend.options)}
    assert spec.to_dict()["grid"]["batch_sizes"] == [1, 2]
    assert pickle.loads(pickle.dumps(spec)) == spec  # what a worker process receives (harness/isolation.py)


def test_load_receives_the_options_dataclass_also_readable_as_a_mapping(tmp_path):
    from harness.api import compose_config
    from harness.plugin.plugins import registry
    from harness.run.plan import load_spec, plan_job

    spec = compose_config(["backend=onnxruntime", "backend.attention=gqa", f"cache_dir={tmp_path}"])
    options = load_spec(plan_job(spec, tmp_path)).options
    assert isinstance(options, registry().option_classes["onnxruntime"])
    assert options.attention == options["attention"] == options.get("attention") == "gqa"
    assert dict(options) == spec.backend.values() and "attention" in options
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.attention = "mha"
