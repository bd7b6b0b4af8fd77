"""Weight-only quantization of an exported graph with ONNX Runtime's own block-wise quantizer (``MatMulNBits``).

``onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer`` replaces every ``MatMul`` whose second
input is a constant weight ``[K, N]`` by the contrib op ``com.microsoft.MatMulNBits`` (4 or 8 bits, blocks of
``block_size`` along K, float scales, uint zero points when asymmetric; ``channel_wised_quantize`` gives one block
per column). The lm_head (the MatMul whose N is the vocabulary) is excluded: it stays in the model dtype, as in
every backend (harness/model/quant.py). Computation stays in the activation dtype unless ``accuracy_level`` says
otherwise (the ORT backend's ``nbits_accuracy_level``: 4 lets the CPU EP quantize activations to int8; the CUDA
EP's kernels ignore it).

The result is its own artifact, keyed by the source ONNX artifact's key, the scheme and the ORT version, so
changing any of them requantizes and nothing else does. The same file serves the fused-ops / GQA graph: the packed
q/k/v and gate/up GEMMs are MatMuls with constant weights like the others.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from backends.onnx_export.artifact import MODEL_FILE
from harness.sdk import Artifact, QuantScheme, UserError, get_or_build, say

QUANTIZER_VERSION = 1  # bump when quantize_onnx changes what it writes


def check_ort_scheme(q: QuantScheme) -> None:
    """MatMulNBits holds 4- or 8-bit integers in blocks of a power of two >= 16 (harness/model/quant.py ensures it)."""
    if q.scheme == "fp8":
        raise UserError("onnxruntime has no fp8 weight-only MatMul (MatMulNBits holds 4- or 8-bit integers)",
                        "use quant=int8 or quant=int4 with backend=onnxruntime")
    if q.group_size == 0:
        raise UserError("ONNX Runtime's MatMulNBits quantizer has no per-channel mode (QOperator format)",
                        "use quant_options.group_size=128 (or another power of two >= 16)")


def lm_head_nodes(model, vocab_size: int) -> list[str]:
    """Names of the MatMul nodes whose constant weight is [K, vocab]: the lm_head, kept in the model dtype."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and len(shapes.get(n.input[1], ())) == 2 and shapes[n.input[1]][1] == vocab_size]


def quantize_onnx(source: Path, target: Path, q: QuantScheme, vocab_size: int, accuracy_level: int = 0) -> dict:
    """Write the MatMulNBits graph of ``source`` to ``target`` (weights in one external-data file beside it)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # the quantizer logs every node it skips at INFO: thousands of lines for a real model
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    model = onnx.load(str(source))
    excluded = lm_head_nodes(model, vocab_size)
    t0 = time.perf_counter()
    quantizer = MatMulNBitsQuantizer(model, bits=q.bits, block_size=q.group_size or 128, is_symmetric=q.symmetric,
                                     nodes_to_exclude=excluded, op_types_to_quantize=("MatMul",),
                                     channel_wised_quantize=q.group_size == 0,
                                     accuracy_level=accuracy_level or None)
    quantizer.process()
    out = quantizer.model.model
    seconds = time.perf_counter() - t0
    onnx.save(out, str(target), save_as_external_data=True, location=f"{target.name}.data")
    ops: dict[str, int] = {}
    for node in out.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    if not ops.get("MatMulNBits"):
        raise RuntimeError(f"ONNX Runtime's quantizer replaced no MatMul in {source}")
    return {"quantize_seconds": seconds, "matmulnbits_nodes": ops["MatMulNBits"], "excluded_nodes": excluded,
            "nodes": len(out.graph.node), "op_counts": ops}


def quantized_onnx_artifact(spec, source: Artifact, q: QuantScheme, accuracy_level: int = 0) -> Artifact:
    """The cached MatMulNBits graph of the ONNX artifact ``source`` under scheme ``q``."""
    check_ort_scheme(q)
    import onnxruntime

    key = {"source_onnx": source.meta["key"], "scheme": q.as_dict(), "quantizer_version": QUANTIZER_VERSION,
           "onnxruntime": onnxruntime.__version__}
    if accuracy_level:  # in the key only when set: the artifacts cached before the option keep their keys
        key["accuracy_level"] = accuracy_level

    def build(tmp: Path) -> dict:
        say(f"onnx: quantizing weights ({q.label}, MatMulNBits) ...")
        meta = quantize_onnx(source.directory / MODEL_FILE, tmp / MODEL_FILE, q, spec.hf_config.vocab_size,
                             accuracy_level)
        say(f"onnx: {meta['matmulnbits_nodes']} MatMulNBits nodes in {meta['quantize_seconds']:.1f} s")
        return {**source.meta, **meta, "export_seconds": source.meta["export_seconds"], "scheme": q.as_dict()}

    return get_or_build(spec.cache_dir, "onnx-quant", key, build, log=say)

