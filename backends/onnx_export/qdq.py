"""Weight-only quantization of an exported graph in the standard ONNX Q/DQ form, for parsers that know only
standard ops (TensorRT's ONNX parser): every decoder linear's ``MatMul(x, W[K, N])`` becomes
``MatMul(x, DequantizeLinear(codes, scales[, zero_points]))`` with the codes as an int8 / int4 / float8e4m3
initializer and the scales of harness/model/quant.py in the model dtype, either per block of ``group_size`` rows along K
(``axis=0``, ``block_size``: opset 21) or per output channel (``axis=1``). The lm_head stays in the model dtype, as
in every backend (the same exclusion as quantize.py).

Why not ONNX Runtime's own ``MatMulNBitsQuantizer(quant_format=QuantFormat.QDQ)``: in onnxruntime 1.32 its QDQ
path is 4-bit only (``DefaultWeightOnlyQuantizer.qbits_block_quant`` asserts ``qbits == 4``; 8 bits logs "MatMul
only supports QOperator format for 8 bits quantization" and leaves the MatMul float), and its symmetric mapping is
its own (absmax / 8) rather than harness/model/quant.py's (absmax / 7.5, torchao's). Writing the nodes ourselves gives
int8, int4 and fp8, blocks and channels, with exactly the codes and scales that the other backends' scheme defines, so
the Q/DQ graph run by ONNX Runtime equals the fake-quantized float32 model (tests/test_quant_qdq.py).

The result is its own artifact (``onnx-qdq/``), keyed by the source ONNX artifact's key, the scheme and this
module's version.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from backends.onnx_export.artifact import MODEL_FILE
from harness.sdk import Artifact, QuantScheme, get_or_build, quantize_weight, say

QDQ_VERSION = 1  # bump when quantize_qdq changes what it writes
OPSET = 21  # DequantizeLinear's block_size and the int4 type


def _weight_as_torch(array: np.ndarray) -> torch.Tensor:
    """An ONNX initializer as a torch tensor (bfloat16 arrives as ml_dtypes.bfloat16, which torch cannot read)."""
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array))  # a writable copy (to_array may return a read-only view)


def _initializer(array: np.ndarray, name: str, int4: bool = False):
    from onnx import numpy_helper

    if int4:
        import ml_dtypes

        array = array.astype(ml_dtypes.int4)
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _codes(codes: torch.Tensor) -> np.ndarray:
    """int8 codes as numpy; fp8 (e4m3) codes as ml_dtypes.float8_e4m3fn (numpy has no fp8, torch cannot export it)."""
    if codes.dtype == torch.float8_e4m3fn:
        import ml_dtypes

        return codes.contiguous().view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn)
    return codes.contiguous().numpy()


def _scales(scale: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """float32 scales [N, groups] as the model dtype's numpy array [groups, N] (ONNX's layout: blocks along K)."""
    s = scale.t().contiguous().to(dtype)
    if dtype == torch.bfloat16:
        import ml_dtypes

        return s.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return s.numpy()


def dequantize_nodes(name: str, weight_kn: np.ndarray, q: QuantScheme):
    """(initializers, DequantizeLinear node, its output name) replacing the constant MatMul weight ``[K, N]``."""
    import onnx

    w = _weight_as_torch(weight_kn)
    codes, scale, zero = quantize_weight(w.t(), q)  # harness/model/quant.py's scheme on W [out=N, in=K]
    int4 = q.bits == 4
    inits = [_initializer(_codes(codes.t()), f"{name}_qdq_codes", int4)]
    scales = _scales(scale, w.dtype)  # [K / g, N]
    attrs = {"axis": 0, "block_size": q.group_size}
    if not q.group_size:  # one scale per output channel: a 1-D scale along N
        scales, attrs = scales.reshape(-1), {"axis": 1}
    inits.append(_initializer(scales, f"{name}_qdq_scales"))
    if zero is not None:
        z = zero.t().contiguous().numpy().astype(np.int8)
        inits.append(_initializer(z.reshape(-1) if not q.group_size else z, f"{name}_qdq_zero_points", int4))
    out = f"{name}_qdq_dequantized"
    node = onnx.helper.make_node("DequantizeLinear", [i.name for i in inits], [out], name=f"{name}_qdq", **attrs)
    return inits, node, out


def quantize_qdq(source: Path, target: Path, q: QuantScheme, vocab_size: int, num_layers: int) -> dict:
    """Write the Q/DQ graph of ``source`` to ``target`` (weights in one external-data file beside it)."""
    import onnx
    from onnx import numpy_helper, version_converter
    from onnx.external_data_helper import load_external_data_for_model

    from backends.onnx_export.quantize import lm_head_nodes

    t0 = time.perf_counter()
    # convert the graph alone (the converter serializes the model: weights would hit protobuf's 2 GB limit);
    # 20 -> 21 changes no op this export uses beyond adding types
    model = version_converter.convert_version(onnx.load(str(source), load_external_data=False), OPSET)
    load_external_data_for_model(model, str(source.parent))
    excluded = set(lm_head_nodes(model, vocab_size))
    inits = {init.name: init for init in model.graph.initializer}
    nodes, replaced = [], []
    for node in model.graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 or node.name in excluded:
            nodes.append(node)
            continue
        new_inits, dq, out = dequantize_nodes(weight.name, numpy_helper.to_array(weight), q)
        model.graph.initializer.extend(new_inits)
        node.input[1] = out
        nodes.extend([dq, node])
        replaced.append(weight.name)
    if len(replaced) != 7 * num_layers:  # q/k/v/o/gate/up/down per layer (the explicit export: no fused GEMMs)
        raise RuntimeError(f"expected {7 * num_layers} decoder MatMuls with constant weights in {source}, "
                           f"found {len(replaced)}")
    replaced_names = set(replaced)
    kept = [init for init in model.graph.initializer if init.name not in replaced_names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(target), save_as_external_data=True, location=f"{target.name}.data")
    onnx.checker.check_model(str(target))
    return {"quantize_seconds": time.perf_counter() - t0, "dequantize_nodes": len(replaced), "opset": OPSET,
            "excluded_nodes": sorted(excluded), "nodes": len(nodes)}


def qdq_onnx_artifact(spec, source: Artifact, q: QuantScheme) -> Artifact:
    """The cached Q/DQ graph of the ONNX artifact ``source`` under scheme ``q``."""
    import onnx

    key = {"source_onnx": source.meta["key"], "scheme": q.as_dict(), "qdq_version": QDQ_VERSION,
           "onnx": onnx.__version__}

    def build(tmp: Path) -> dict:
        say(f"onnx: quantizing weights ({q.label}, Q/DQ) ...")
        meta = quantize_qdq(source.directory / MODEL_FILE, tmp / MODEL_FILE, q, spec.hf_config.vocab_size,
                            spec.hf_config.num_hidden_layers)
        say(f"onnx: {meta['dequantize_nodes']} DequantizeLinear nodes in {meta['quantize_seconds']:.1f} s")
        return {**source.meta, **meta, "scheme": q.as_dict()}

    return get_or_build(spec.cache_dir, "onnx-qdq", key, build, log=say)
