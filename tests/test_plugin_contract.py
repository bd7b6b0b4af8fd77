"""The plugin contract is enforced: at registration (constructor, hook names, argument names, required hooks,
import failures, two packages claiming one name) and on hook results (type, shape, dtype, device, finite), each
refusal one line naming the plugin, the hook and the fix; a broken plugin breaks only the commands that select it.
Uses the real broken backends of tests/plugins/broken_backend_pkg (installed with pip for the CLI tests)."""
from __future__ import annotations

import json

import pytest
import torch

from harness.errors import UserError
from harness.plugin.plugins import PluginRegistry
from helpers import broken_backends, plugin_env, run_cli

broken_backend = broken_backends()


@pytest.mark.parametrize("cls, expected", [
    (broken_backend.NeedsArguments, "NeedsArguments() failed: TypeError"),
    (broken_backend.WrongArgumentNames, "hook prefill takes ids, which the spec does not pass"),
    (broken_backend.MisspelledHook, "@hookimpl decode_steps is not a hook"),
    (broken_backend.UnmarkedHook, "decode_step is not marked as a hook"),
])
def test_registration_refuses_a_broken_class(cls, expected):
    with pytest.raises(UserError) as err:
        PluginRegistry().add_backend("x", cls)
    assert expected in err.value.problem and "backend 'x'" in err.value.problem
    line = err.value.one_line()
    assert "\n" not in line


def test_registration_fixes_name_the_remedy():
    fixes = {}
    for cls in (broken_backend.NeedsArguments, broken_backend.WrongArgumentNames, broken_backend.MisspelledHook,
                broken_backend.UnmarkedHook):
        with pytest.raises(UserError) as err:
            PluginRegistry().add_backend("x", cls)
        fixes[cls.__name__] = err.value.fix
    assert "without arguments" in fixes["NeedsArguments"]
    assert "prefill(self, input_ids, prompt_lens)" in fixes["WrongArgumentNames"]
    assert "did you mean decode_step?" in fixes["MisspelledHook"]
    assert "@hookimpl" in fixes["UnmarkedHook"]


def test_a_missing_required_hook_names_the_near_miss():
    class Misnamed(broken_backend.Working):
        decode_step = None  # drops the inherited hook

        def decode_steps(self, tokens):  # unmarked and misspelled
            return self.logits(tokens)

    with pytest.raises(UserError, match="required hook decode_step is missing") as err:
        PluginRegistry().add_backend("x", Misnamed)
    assert "rename decode_steps to decode_step" in err.value.fix


def test_a_working_backend_registers_and_records_its_package():
    registry = PluginRegistry()
    registry.add_backend("working", broken_backend.Working)
    assert registry.names() == ["working"] and registry.defaults("working") == {}
    assert registry.open("working").provider.package == "broken_backend"


def _open_working(cls, vocab=32):
    from harness.model.sources import ModelSource
    from harness.plugin.loadspec import LoadSpec
    from helpers import tiny_model_cfg

    registry = PluginRegistry()
    registry.add_backend("b", cls)
    handle = registry.open("b")
    source = ModelSource.from_config(tiny_model_cfg(vocab_size=vocab), 0)
    handle.load(spec=LoadSpec(model=source, dtype=torch.float32, device="cpu", options={}, max_batch=2, max_seq=8))
    return handle.checked(vocab, "cpu")


def test_hook_results_are_checked_naming_the_hook():
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert _open_working(broken_backend.Working).prefill(input_ids=ids, prompt_lens=None).shape == (2, 32)
    shape = r"prefill returned logits of shape \[2, 1, 32\], expected \[B, V\] = \[2, 32\]"
    with pytest.raises(UserError, match=shape):
        _open_working(broken_backend.WrongShape).prefill(input_ids=ids, prompt_lens=None)
    with pytest.raises(UserError, match="decode_step returned ndarray, not a torch tensor"):
        _open_working(broken_backend.NumpyLogits).decode_step(tokens=ids[:, :1])


def test_logits_checks_cover_dtype_device_and_finite():
    from harness.plugin.contract import check_logits

    good = torch.zeros(2, 5)
    check_logits("prefill", "b", good, 2, 5, "cpu")
    with pytest.raises(UserError, match="returned int64 logits"):
        check_logits("prefill", "b", torch.zeros(2, 5, dtype=torch.long), 2, 5, "cpu")
    with pytest.raises(UserError, match="non-finite"):
        check_logits("decode_step", "b", torch.full((2, 5), float("nan")), 2, 5, "cpu")
    check_logits("decode_step", "b", torch.full((2, 5), float("nan")), 2, 5, "cpu", finite=False)
    with pytest.raises(UserError, match="on meta, expected cpu"):
        check_logits("prefill", "b", torch.zeros(2, 5, device="meta"), 2, 5, "cpu")


def test_hook_checks_stay_out_of_the_timed_loop():
    """The timed iterations call the backend's hooks directly; only warm-up goes through the checked hooks."""
    import inspect

    from harness.run import cell as measure

    source = inspect.getsource(measure.time_cell)
    assert "warm_up(checked," in source and "time_iterations(handle," in source


@pytest.mark.slow
def test_broken_plugins_are_reported_and_skipped(broken_site, tmp_path):
    proc = run_cli("backend=hf-flashattn-staticcache", "task=validate", "device=cpu", f"output_dir={tmp_path}",
                   env=plugin_env(broken_site))
    assert proc.returncode == 0, proc.stderr  # the other backends still run
    for name in ("broken-import", "broken-constructor", "broken-arguments", "broken-misspelled", "broken-unmarked"):
        assert f"backend '{name}'" in proc.stderr
    claim = [line for line in proc.stderr.splitlines() if "backend 'onnxruntime' is provided by" in line]
    assert len(claim) == 1 and "enginebench-broken-backends 0.1.0" in claim[0] and "enginebench 0.1.0" in claim[0]


@pytest.mark.slow
def test_selecting_a_broken_plugin_shows_the_original_error(broken_site, tmp_path):
    proc = run_cli("backend=broken-import", f"output_dir={tmp_path}", "--verbose", env=plugin_env(broken_site))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "backend 'broken-import' is unavailable" in last
    assert "ModuleNotFoundError: No module named 'fancy_engine_that_is_not_installed'" in last


@pytest.mark.slow
def test_two_packages_claiming_one_name(broken_site, tmp_path):
    proc = run_cli("backend=onnxruntime", "task=validate", f"output_dir={tmp_path}/a", env=plugin_env(broken_site))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "two packages provide backend 'onnxruntime'" in last and "enginebench-broken-backends 0.1.0" in last
    assert "ENGINEBENCH_BACKEND_FROM=onnxruntime=" in last
    proc = run_cli("backend=onnxruntime", "task=validate", "device=cpu", f"output_dir={tmp_path}/b",
                   env=plugin_env(broken_site, ENGINEBENCH_BACKEND_FROM="onnxruntime=enginebench"))
    assert proc.returncode == 0, proc.stderr
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["backend_provided_by"].startswith("enginebench ")


@pytest.mark.slow
def test_a_wrong_hook_result_fails_validation_in_one_line(broken_site, tmp_path):
    proc = run_cli("backend=broken-shape", "task=validate", "device=cpu", f"output_dir={tmp_path}",
                   env=plugin_env(broken_site))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "backend 'broken-shape': prefill returned logits of shape [2, 1, " in proc.stderr


def test_an_observer_with_an_unknown_hook_is_refused():
    from harness import hookimpl

    class Tracer:
        @hookimpl(hookwrapper=True)
        def decode_steps(self, tokens):
            yield

    registry = PluginRegistry()
    with pytest.raises(UserError, match="observer plugin 'tracer': unknown hook 'decode_steps'"):
        registry.add_observer(Tracer(), name="tracer")
    assert registry.pm.get_plugin("tracer") is None
