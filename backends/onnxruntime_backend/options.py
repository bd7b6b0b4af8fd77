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
