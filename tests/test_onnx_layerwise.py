"""The layerwise ONNX export (backends/onnx_export/layerwise.py) against the whole-model export it replaces: the same
logits and caches under ONNX Runtime for a tiny checkpoint of every described family and each graph form, and the
same weights, byte for byte, in bfloat16."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from families import FAMILY_CONFIGS, save_tiny_checkpoint

pytest.importorskip("onnxruntime")

MAX_SEQ = 32
# (family, attention, fused_ops): every family's explicit graph, the GroupQueryAttention graphs of those it can take
CASES = [(family, "explicit", False) for family in sorted(FAMILY_CONFIGS)]
CASES += [("llama", "gqa", False), ("llama", "gqa", True), ("qwen3", "gqa", False)]
FAST = {("llama", "explicit", False)}  # plain layers (gemma3_text's two kinds of layer: marked slow, 2 exports)


def _model(family: str, tmp_path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    path = save_tiny_checkpoint(family, tmp_path / family)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def _export_both(model, attention, fused_ops, tmp_path) -> dict:
    from backends.onnx_export.export import export_onnx

    metas = {}
    for layerwise in (False, True):
        path = tmp_path / ("layerwise" if layerwise else "whole") / "model.onnx"
        metas[layerwise] = {**export_onnx(model, MAX_SEQ, path, attention, fused_ops, layerwise=layerwise),
                            "path": path}
    return metas


def _feeds(config, attention: str, names: list[str]) -> dict:
    """A prompt of 5 tokens for 2 rows (random ids, random caches), as the graph reads them."""
    from backends.onnx_export.graph import example_inputs

    args = list(example_inputs(config, torch.float32, "cpu", MAX_SEQ, attention, batch=2, seq=5))
    gen = torch.Generator().manual_seed(1)
    args[0] = torch.randint(0, config.vocab_size, tuple(args[0].shape), generator=gen)
    args = [torch.randn(a.shape, generator=gen) if a.dtype == torch.float32 else a for a in args]
    return {name: a.numpy() for name, a in zip(names, args)}


@pytest.mark.parametrize("family,attention,fused_ops", [
    pytest.param(*case, marks=() if case in FAST else pytest.mark.slow) for case in CASES])
def test_layerwise_export_computes_what_the_whole_model_export_computes(family, attention, fused_ops, tmp_path):
    import onnxruntime as ort

    from backends.onnx_export.graph import io_names

    model = _model(family, tmp_path)
    metas = _export_both(model, attention, fused_ops, tmp_path)
    assert metas[True]["export_method"] == "layerwise" and metas[False]["export_method"] == "whole model"
    in_names, out_names = io_names(model.config.num_hidden_layers, attention)
    feeds = _feeds(model.config, attention, in_names)
    outputs = {}
    for layerwise, meta in metas.items():
        session = ort.InferenceSession(str(meta["path"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == in_names
        assert [o.name for o in session.get_outputs()] == out_names
        outputs[layerwise] = session.run(None, feeds)
    for name, whole, layerwise in zip(out_names, outputs[False], outputs[True]):
        np.testing.assert_array_equal(layerwise, whole, err_msg=name)
    # the same operators, give or take the shape arithmetic each part computes for itself
    shape_ops = {"Shape", "Concat", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Mul", "Not"}
    for op in set(metas[True]["op_counts"]) | set(metas[False]["op_counts"]):
        if op not in shape_ops:
            assert metas[True]["op_counts"].get(op) == metas[False]["op_counts"].get(op), op


def _weights(path) -> list[tuple]:
    """(dtype, shape, sha1 of the bytes) of every initializer, sorted: the weights as written, names aside."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return sorted((t.data_type, tuple(t.dims), hashlib.sha1(numpy_helper.to_array(t).tobytes()).hexdigest())
                  for t in model.graph.initializer if np.prod(t.dims) > 64)  # weights, not shape constants


def test_layerwise_export_writes_the_same_bfloat16_weights(tmp_path):
    """bfloat16 (which the CPU EP does not run): the folded, transposed weights are the same bytes as the whole
    model export's."""
    model = _model("llama", tmp_path, torch.bfloat16)
    metas = _export_both(model, "explicit", False, tmp_path)
    whole, layerwise = (_weights(metas[k]["path"]) for k in (False, True))
    assert len(whole) > 2 * model.config.num_hidden_layers
    assert layerwise == whole
