"""Typed backend options: declared as dataclasses, put into Hydra's ConfigStore, checked for every job of a command
line before the first one starts, each refusal one line naming the option, the allowed values and the backend."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from harness.errors import UserError
from harness.plugin.options import check_options, choice, defaults_of, from_defaults, needs
from helpers import broken_backends, run_cli


@dataclass
class Demo:
    kernel: str = choice("auto", "fast", "exact")
    graphs: bool = needs(False, kernel="fast")
    threads: int = 4

    def check(self) -> None:
        if self.threads > 64:
            raise UserError(f"backend.threads={self.threads} is more than the engine supports", "use at most 64")


def test_choices_needs_and_check():
    check_options("demo", Demo, {"kernel": "fast", "graphs": True, "threads": 8})
    with pytest.raises(UserError) as err:
        check_options("demo", Demo, {"kernel": "fastest", "graphs": False, "threads": 4})
    assert err.value.problem == "backend.kernel=fastest is not an option of backend demo"
    assert err.value.fix == "use one of: auto, fast, exact"
    with pytest.raises(UserError) as err:
        check_options("demo", Demo, {"kernel": "auto", "graphs": True, "threads": 4})
    assert err.value.problem == "backend.graphs=true needs backend.kernel=fast (backend demo)"
    with pytest.raises(UserError, match=r"more than the engine supports \(backend demo\)"):
        check_options("demo", Demo, {"kernel": "auto", "graphs": False, "threads": 65})


def test_hook_enginebench_backend_options(registry):
    """Every built-in backend declares a dataclass; its defaults are valid and are what backend.* composes to."""
    from harness.api import compose_config
    from harness.plugin.plugins import registry as shared

    shared()
    for name in ("hf-flashattn-staticcache", "onnxruntime", "trt-onnx-parsed", "trt-handbuilt"):
        options = registry.option_classes[name]
        assert options.__dataclass_fields__, name
        check_options(name, options, defaults_of(options))
        backend = compose_config([f"backend={name}"]).backend
        assert backend.name == name and isinstance(backend.options, options)
        assert backend.values() == defaults_of(options)


def test_hook_enginebench_backend_defaults():
    """The untyped short form: a dict of defaults becomes a dataclass typed from the values."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    from harness import hookimpl
    from harness.plugin.plugins import PluginRegistry

    class DictDeclared(broken_backends().Working):
        @hookimpl
        def enginebench_backend_defaults(self):
            return {"fused": True, "threads": 2, "layers": [1, 2]}

    registry = PluginRegistry()
    registry.add_backend("dict-declared", DictDeclared)
    assert registry.defaults("dict-declared") == {"fused": True, "threads": 2, "layers": [1, 2]}
    node = OmegaConf.structured(registry.option_classes["dict-declared"])
    with pytest.raises(ValidationError):
        node.fused = "maybe"
    with pytest.raises(ValidationError):
        node.threads = "many"


def test_from_defaults_types():
    made = from_defaults("x", {"a": None, "b": 1.5, "c": "s"})
    assert defaults_of(made) == {"a": None, "b": 1.5, "c": "s"}


@pytest.mark.slow
def test_multirun_with_one_bad_value_stops_before_any_job(tmp_path):
    proc = run_cli("-m", "backend=onnxruntime,hf-flashattn-staticcache", "backend.attention=explicit",
                   f"hydra.sweep.dir={tmp_path}/sweep")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "backend.attention=explicit is not an option of backend hf-flashattn-staticcache" in last
    assert "use one of: auto, flash_attention_2" in last
    assert not (tmp_path / "sweep").exists() or not any((tmp_path / "sweep").iterdir())  # no job ran


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["backend=trt-handbuilt", "backend.fuse_qkv=maybe"],
     "wrong type for backend.fuse_qkv of backend trt-handbuilt: 'maybe' is not true or false"),
    (["backend=onnxruntime", "backend.fused_ops=true"],
     "backend.fused_ops=true needs backend.attention=gqa (backend onnxruntime)"),
    (["backend=trt-onnx-parsed", "backend.cuda_graph=true"], "backend trt-onnx-parsed has no option"),
    (["backend=onnxruntime", "backend.atention=gqa"], "did you mean backend.attention?"),
])
def test_bad_backend_option_is_one_line_exit_2(args, expected, tmp_path):
    proc = run_cli(*args, f"output_dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expected in proc.stderr.strip().splitlines()[-1]
