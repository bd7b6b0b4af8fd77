"""The options of ``onnxruntime`` (``backend.*``): types, defaults, allowed values and what needs what, checked for
every job before the first one starts (the ONNX attention form and the fused-ops and CUDA-graph rules live here
only)."""
from __future__ import annotations

from dataclasses import dataclass

from backends.onnx_export.forms import ATTENTIONS
from harness.sdk import choice, needs

OPT_LEVELS = ("all", "extended", "basic", "disable")


@dataclass
class OrtOptions:
    provider: str = choice("auto", "cuda", "cpu")  # auto: the CUDA EP when device is CUDA
    graph_optimization: str = choice(*OPT_LEVELS)
    attention: str = choice(*ATTENTIONS)  # explicit (MatMul/Softmax) | gqa (ORT's fused GroupQueryAttention)
    # replay decode steps as CUDA graphs (one per batch size); the explicit graph's cache indices run on the CPU
    # and a replayed graph would write stale slots
    cuda_graph: bool = needs(False, attention="gqa")
    # fused residual+RMSNorm, RoPE inside GroupQueryAttention, one q/k/v and one gate/up GEMM (ORT's fused ops
    # exist only in the GroupQueryAttention graph)
    fused_ops: bool = needs(False, attention="gqa")
    # quant=int4|int8 (MatMulNBits, onnx_export/quantize.py): the accuracy_level attribute (the least precise
    # compute allowed: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations; the CPU EP's MLAS kernels use it, the
    # CUDA EP's kernels do not) and the CUDA EP's kernel family (default: ORT's own GEMV / dequantize + GEMM;
    # fpa_intb: the CUTLASS mixed-input GEMM and GEMV ported from TensorRT-LLM, ORT_FPA_INTB_GEMM=1)
    nbits_accuracy_level: int = choice(0, 1, 2, 3, 4)
    nbits_kernel: str = choice("default", "fpa_intb")
