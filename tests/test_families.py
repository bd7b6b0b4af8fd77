"""Every described family on every backend that rebuilds or runs it, validated on the CPU against HF float32 with
tiny checkpoints saved by transformers (tests/families.py); the tokenizer cases of checkpoint directories."""
from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from families import FAMILY_CONFIGS, checkpoint_cfg, save_tiny_checkpoint

from helpers import open_backend, run_cli

FAMILIES = sorted(FAMILY_CONFIGS)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {t: save_tiny_checkpoint(t, root / t) for t in FAMILIES}


def validate(handle, source, dtype=torch.float32):
    from harness.accuracy.validate import validate_backend

    return validate_backend(handle, source, dtype, "cpu", batch=2, prompt_len=6, steps=4, seed=0)


def assert_passed(results):
    assert results and all(r.passed for r in results), [(r.case, r.max_abs_diff, r.reason) for r in results]


# -- tokenizer -------------------------------------------------------------------------------------------------

def test_checkpoint_without_tokenizer_files_validates_on_random_ids(registry, checkpoints):
    from harness.accuracy.validate import validation_inputs

    handle, source, _ = open_backend(registry, "hf-flashattn-staticcache", checkpoint_cfg(checkpoints["qwen2"]),
                                     max_seq=32)
    assert source.tokenizer() is None
    inputs, cases = validation_inputs(source, 2, 6, 0)
    assert inputs == "random ids"
    assert all(r.dtype == torch.long for groups in cases.values() for group in groups for r in group)
    assert_passed(validate(handle, source))


@pytest.mark.parametrize("content", ["{not json", "{}"])
def test_present_but_broken_tokenizer_is_a_user_error(checkpoints, tmp_path, content):
    from harness.errors import UserError
    from harness.model.sources import ModelSource

    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["qwen2"], broken)
    name = "tokenizer.json" if content.startswith("{not") else "tokenizer_config.json"
    (broken / name).write_text(content)  # unparsable, or a config naming no vocabulary (encodes to no ids)
    with pytest.raises(UserError, match="tokenizer"):
        ModelSource.from_config(checkpoint_cfg(broken), 0)


@pytest.mark.slow  # starts the command line
def test_cli_broken_tokenizer_exits_2_in_one_line_and_writes_nothing(checkpoints, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["qwen2"], broken)
    (broken / "tokenizer.json").write_text("{not json")
    out = tmp_path / "out"
    proc = run_cli("task=validate", f"model.path={broken}", "backend=hf-flashattn-staticcache", f"output_dir={out}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("enginebench: error:")]
    assert len(errors) == 1 and "tokenizer" in errors[0] and "Traceback" not in proc.stderr
    assert not out.exists()


# -- HF backend ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["sdpa", pytest.param("eager", marks=pytest.mark.slow)])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_hf_backend_validates_every_family(registry, checkpoints, model_type, attention):
    handle, source, info = open_backend(registry, "hf-flashattn-staticcache",
                                        checkpoint_cfg(checkpoints[model_type]), options={"attention": attention},
                                        max_seq=32)
    assert info["attn_implementation"] == attention
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated cache argument on any path
        assert_passed(validate(handle, source))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_hf_backend_static_attention_path_validates_every_family(registry, checkpoints, model_type):
    """The FlashAttention choices' code path (static cache read by fill, token-major storage) through the
    plain-torch reference op: the same contract as the CUDA kernels."""
    handle, source, _ = open_backend(registry, "hf-flashattn-staticcache", checkpoint_cfg(checkpoints[model_type]),
                                     max_seq=32)
    handle.instance._set_attention("reference")
    assert_passed(validate(handle, source))


def test_flash_choice_refuses_soft_capping_and_short_windows_and_auto_records_why(registry, tmp_path):
    from harness.errors import UserError
    from harness.model.families import plain_attention_problem
    from harness.model.sources import ModelSource

    windowed = save_tiny_checkpoint("mistral", tmp_path / "windowed", sliding_window=16)
    config = ModelSource.from_config(checkpoint_cfg(windowed), 0).config()
    assert "sliding window of 16 tokens" in plain_attention_problem(config, 32)
    assert plain_attention_problem(config, 16) is None  # a window as long as the cache masks nothing
    # Gemma 2 (no family description: the HF backend runs it all the same) soft-caps its attention logits
    capped = save_tiny_checkpoint("gemma2", tmp_path / "capped", head_dim=32, sliding_window=512,
                                  attn_logit_softcapping=50.0)
    with pytest.raises(UserError, match="attention logit soft-capping") as refused:
        open_backend(registry, "hf-flashattn-staticcache", checkpoint_cfg(capped),
                     options={"attention": "flash_attention_2"}, max_seq=32)
    assert "\n" not in str(refused.value)
    handle, source, _ = open_backend(registry, "hf-flashattn-staticcache", checkpoint_cfg(capped), max_seq=32)
    info = handle.instance._choose_attention(["torch_flash", "sdpa"], "auto", None)  # auto's order on CUDA
    assert info["attn_implementation"] == "eager"  # transformers has no SDPA path for Gemma 2
    assert "soft-capping" in info["attention_skipped"]["torch_flash"]
    assert "sdpa" in info["attention_skipped"]
    assert_passed(validate(handle, source))


# -- graph backends --------------------------------------------------------------------------------------------

# an export each: llama's in the fast lane, the other families marked slow
ORT_FAMILY_PARAMS = [pytest.param(t, marks=() if t == "llama" else pytest.mark.slow) for t in FAMILIES]


@pytest.mark.parametrize("model_type", ORT_FAMILY_PARAMS)
def test_onnxruntime_validates_every_family(registry, checkpoints, model_type, tmp_path):
    pytest.importorskip("onnxruntime")
    handle, source, info = open_backend(registry, "onnxruntime", checkpoint_cfg(checkpoints[model_type]),
                                        max_seq=32, tmp_cache=tmp_path)
    try:
        assert info["onnx_check_max_abs_diff"] < 1e-4
        assert_passed(validate(handle, source))
    finally:
        handle.close()


@pytest.mark.slow  # one more export per family
@pytest.mark.parametrize("model_type", ["qwen3", "phi3", "gemma3_text"])
def test_onnxruntime_gqa_graph_validates_families(registry, checkpoints, model_type, tmp_path):
    pytest.importorskip("onnxruntime")
    handle, source, _ = open_backend(registry, "onnxruntime", checkpoint_cfg(checkpoints[model_type]),
                                     options={"attention": "gqa"}, max_seq=32, tmp_cache=tmp_path)
    try:
        assert_passed(validate(handle, source))
    finally:
        handle.close()


def _onnxruntime_validates(registry, path, tmp_path):
    """The checkpoint at ``path``, exported and run by ONNX Runtime, passes validation against HF."""
    handle, source, _ = open_backend(registry, "onnxruntime", checkpoint_cfg(path), max_seq=32,
                                     tmp_cache=tmp_path / "cache")
    try:
        assert_passed(validate(handle, source))
    finally:
        handle.close()


@pytest.mark.slow  # an export of its own
def test_onnx_export_of_short_windows_and_soft_capping_matches_hf(registry, tmp_path):
    """Windows shorter than the cache and soft-capping are masks and tanh in the explicit graph."""
    pytest.importorskip("onnxruntime")
    path = save_tiny_checkpoint("gemma3_text", tmp_path / "g", sliding_window=5, attn_logit_softcapping=2.0,
                                final_logit_softcapping=3.0)
    _onnxruntime_validates(registry, path, tmp_path)


@pytest.mark.parametrize("attention", ["explicit", pytest.param("fused", marks=pytest.mark.slow)])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_trt_handbuilt_evaluator_validates_every_family(registry, checkpoints, model_type, attention):
    """The hand-built network, read layer by layer by the CPU evaluator (trt_common/evaluator.py)."""
    from helpers import installed_tensorrt

    if installed_tensorrt() is None:
        pytest.skip("neither tensorrt nor tensorrt_rtx_bindings installed")
    handle, source, info = open_backend(registry, "trt-handbuilt", checkpoint_cfg(checkpoints[model_type]),
                                        max_seq=32, options={"attention": attention})
    try:
        assert info["mode"] == "evaluator"
        assert_passed(validate(handle, source))
    finally:
        handle.close()


def test_trt_handbuilt_windows_and_soft_capping_match_hf(registry, tmp_path):
    from helpers import installed_tensorrt

    if installed_tensorrt() is None:
        pytest.skip("neither tensorrt nor tensorrt_rtx_bindings installed")
    path = save_tiny_checkpoint("gemma3_text", tmp_path / "g", sliding_window=5, attn_logit_softcapping=2.0,
                                final_logit_softcapping=3.0)
    handle, source, _ = open_backend(registry, "trt-handbuilt", checkpoint_cfg(path), max_seq=32)
    try:
        assert_passed(validate(handle, source))
    finally:
        handle.close()


def test_graph_backends_refuse_partial_rotary_and_unknown_types_in_one_line(registry, tmp_path):
    from transformers import AutoConfig

    from harness.errors import UserError

    path = save_tiny_checkpoint("phi3", tmp_path / "partial", rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
    with pytest.raises(UserError, match="trt-handbuilt cannot build this model: partial rotary") as refused:
        open_backend(registry, "trt-handbuilt", checkpoint_cfg(path), max_seq=32)
    assert "\n" not in str(refused.value)
    from backends.onnx_export.graph import check_supported

    with pytest.raises(UserError, match="model type 'gpt2' has no family description"):
        check_supported(AutoConfig.for_model("gpt2"), 32)


def test_docs_table_matches_the_family_descriptions():
    from harness.model.families import support_table
    from helpers import ROOT

    for path in (ROOT / "docs" / "models.md", ROOT / "README.md"):  # README's model section shows it too
        page = path.read_text()
        start = page.index("<!-- support-table: generated by ")  # the marker names the command that writes it
        committed = page[start:page.index("<!-- /support-table -->")].split("\n", 1)[1]
        assert committed == support_table(), (
            f"regenerate the table in {path.name} with: python -m harness.model.families")


@pytest.mark.slow  # an export of its own
def test_onnxruntime_partial_rotary_matches_hf(registry, tmp_path):
    """RoPE on half of each head (Phi-4-mini's partial_rotary_factor), with a fused-projection family."""
    pytest.importorskip("onnxruntime")
    path = save_tiny_checkpoint("phi3", tmp_path / "partial", rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
    _onnxruntime_validates(registry, path, tmp_path)
