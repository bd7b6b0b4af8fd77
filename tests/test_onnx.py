"""ONNX export and the onnxruntime backend on CPU: parity for every variant, the artifact cache (reuse,
corruption, atomic publish), reset_kv and batches of left-padded rows."""
import pytest
import torch
from variants import VARIANTS, variant_params

from harness.accuracy.inputs import left_pad, random_prompt_ids
from harness.accuracy.validate import validate_backend
from harness.errors import UserError
from helpers import open_backend, tiny_model_cfg

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


# The exported graph preallocates the KV cache (max_seq is part of the artifact's key): the tests of the default
# model load it at the length the variant tests exported it, from the module's cache, instead of exporting again.
MAX_SEQ = 32


# the three exported graphs: attention written out | ORT's GroupQueryAttention | that plus ORT's other fused ops
GRAPHS = {"explicit": {"attention": "explicit"}, "gqa": {"attention": "gqa"},
          "gqa_fused": {"attention": "gqa", "fused_ops": True}}
# the explicit graph in the fast lane; the GroupQueryAttention graphs (one more export each) marked slow
GRAPH_PARAMS = [pytest.param(g, marks=() if g == "explicit" else pytest.mark.slow) for g in GRAPHS]


@pytest.mark.parametrize("graph", GRAPH_PARAMS)
@pytest.mark.parametrize("variant", variant_params())
def test_export_matches_hf_for_variant(registry, variant, graph, cache_dir):
    handle, source, info = open_backend(registry, "onnxruntime", model_cfg=VARIANTS[variant], max_seq=MAX_SEQ,
                                        options=GRAPHS[graph], tmp_cache=cache_dir)
    try:
        assert info["providers"] == ["CPUExecutionProvider"]
        assert info["onnx_attention"] == GRAPHS[graph]["attention"]
        assert info["onnx_fused_ops"] == GRAPHS[graph].get("fused_ops", False)
        assert info["onnx_check_max_abs_diff"] < 1e-4
        results = validate_backend(handle, source, torch.float32, "cpu", batch=3, prompt_len=9, steps=6, seed=1)
        assert {r.case for r in results} == {"equal_lengths", "left_padded"}
        assert all(r.passed and r.greedy_agreement == 1.0 for r in results), results
    finally:
        handle.close()


@pytest.mark.slow  # three loads, one a full re-export
def test_second_load_reuses_artifact_and_corruption_is_rebuilt(registry, cache_dir):
    first, _, info1 = open_backend(registry, "onnxruntime", max_seq=MAX_SEQ, tmp_cache=cache_dir)
    first.close()
    second, _, info2 = open_backend(registry, "onnxruntime", max_seq=MAX_SEQ, tmp_cache=cache_dir)
    second.close()
    assert info2["onnx_reused"] and info2["onnx_dir"] == info1["onnx_dir"]
    from pathlib import Path

    data = Path(info1["onnx_dir"]) / "model.onnx.data"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # a truncated weights file
    third, source, info3 = open_backend(registry, "onnxruntime", max_seq=MAX_SEQ, tmp_cache=cache_dir)
    try:
        assert not info3["onnx_reused"]
        ids = random_prompt_ids(source.config(), 1, 5, seed=2)
        ref = source.build_fp32_cpu()(input_ids=ids).logits[:, -1]
        torch.testing.assert_close(third.prefill(input_ids=ids, prompt_lens=None), ref, atol=1e-4, rtol=1e-4)
    finally:
        third.close()


@pytest.mark.slow  # an export of its own
def test_no_temporary_directories_left(registry, tmp_path):
    handle, _, info = open_backend(registry, "onnxruntime", max_seq=24, tmp_cache=tmp_path)  # a fresh build
    handle.close()
    assert not info["onnx_reused"]
    entries = list((tmp_path / "onnx").iterdir())
    assert [p for p in entries if not p.name.startswith(".")] and not [p for p in entries if ".tmp" in p.name]


@pytest.mark.parametrize("graph", GRAPH_PARAMS)
def test_reset_kv_keeps_buffers_and_repeats_results(registry, graph, cache_dir):
    handle, source, _ = open_backend(registry, "onnxruntime", options=GRAPHS[graph], max_seq=MAX_SEQ,
                                     tmp_cache=cache_dir)
    try:
        runner = handle.instance.runner
        pointers = [c.data_ptr() for c in runner.caches]
        rows = [random_prompt_ids(source.config(), 1, n, seed=n)[0] for n in (7, 3, 5)]
        ids, lens = left_pad(rows)
        outs = []
        for _ in range(2):
            handle.reset_kv()
            a = handle.prefill(input_ids=ids, prompt_lens=lens)
            b = handle.decode_step(tokens=a.argmax(-1, keepdim=True))
            outs.append((a, b))
        torch.testing.assert_close(outs[0][0], outs[1][0])
        torch.testing.assert_close(outs[0][1], outs[1][1])
        assert [c.data_ptr() for c in runner.caches] == pointers
    finally:
        handle.close()


def test_decode_past_preallocated_length_is_a_clear_error(registry, cache_dir):
    handle, source, _ = open_backend(registry, "onnxruntime", max_seq=MAX_SEQ, tmp_cache=cache_dir)
    try:
        with pytest.raises(UserError, match="exceeds the preallocated"):
            handle.prefill(input_ids=torch.ones(1, MAX_SEQ + 6, dtype=torch.long), prompt_lens=None)
    finally:
        handle.close()


def test_unsupported_architecture_is_one_line(registry, tmp_path):
    from transformers import AutoConfig

    from backends.onnx_export.graph import check_supported

    with pytest.raises(UserError, match="model type 'gpt2' has no family description"):
        check_supported(AutoConfig.for_model("gpt2"))
    rope = {"rope_type": "longrope", "original_max_position_embeddings": 64, "short_factor": [1.0] * 8,
            "long_factor": [4.0] * 8}
    cfg = tiny_model_cfg(rope_scaling=rope)
    from harness.model.sources import ModelSource

    config = ModelSource.from_config(cfg, 0).config()
    with pytest.raises(UserError, match="RoPE type 'longrope' changes its tables"):
        check_supported(config, max_seq=128)
    check_supported(config, max_seq=64)  # below the switch point: one table serves every length


def test_cuda_graph_needs_gqa_graph_on_cuda(registry, cache_dir, tmp_path):
    with pytest.raises(UserError, match="cuda_graph=true needs backend.attention=gqa"):
        open_backend(registry, "onnxruntime", options={"cuda_graph": True}, max_seq=24, tmp_cache=cache_dir)
    with pytest.raises(UserError, match="cuda_graph=true replays CUDA graphs: it needs the CUDA EP"):
        open_backend(registry, "onnxruntime", options={"cuda_graph": True, "attention": "gqa"}, max_seq=24,
                     tmp_cache=tmp_path)
    assert not list(tmp_path.rglob("*.onnx")), "the device check must come before the export"
    with pytest.raises(UserError, match="backend.attention=flash is not an option of backend onnxruntime"):
        open_backend(registry, "onnxruntime", options={"attention": "flash"}, max_seq=24, tmp_cache=cache_dir)
    with pytest.raises(UserError, match=r"fused_ops=true needs backend.attention=gqa \(backend onnxruntime\)"):
        open_backend(registry, "onnxruntime", options={"fused_ops": True}, max_seq=24, tmp_cache=cache_dir)


@pytest.mark.parametrize("fused_ops", [False, True])
@pytest.mark.parametrize("variant", ["llama3_rope_scaling", "qwen2_bias_tied"])
def test_gqa_module_in_torch_matches_hf(variant, fused_ops):
    """The custom ops' torch implementations (ORT's semantics as gqa.py and fused.py state them: packed q/k/v,
    RoPE from cos/sin tables at each slot, fused residual + RMSNorm) against HF, ragged rows."""
    from backends.onnx_export.export import decoder_for
    from backends.onnxruntime_backend.ragged_cursor import RaggedCursor
    from harness.model.sources import ModelSource, head_dim

    source = ModelSource.from_config(VARIANTS[variant], 0)
    model = source.build_fp32_cpu()
    module, config = decoder_for(model, "gqa", fused_ops, max_seq=16), source.config()
    rows = [random_prompt_ids(config, 1, n, seed=n)[0] for n in (6, 2)]
    ids, lens = left_pad(rows)
    cursor = RaggedCursor("cpu", 2, 16)
    past = [torch.zeros(2, config.num_key_value_heads, 16, head_dim(config))
            for _ in range(2 * config.num_hidden_layers)]
    seqs = [r.tolist() for r in rows]
    with torch.no_grad():
        logits, *past = module(*cursor.begin(ids, lens), *past)
        for _ in range(3):
            tokens = logits.argmax(-1, keepdim=True)
            for b in range(2):
                seqs[b].append(int(tokens[b]))
            logits, *past = module(*cursor.step(tokens), *past)
            cursor.advance()
        for b in range(2):
            ref = model(input_ids=torch.tensor([seqs[b]])).logits[0, -1]
            torch.testing.assert_close(logits[b], ref, atol=1e-5, rtol=1e-5)
