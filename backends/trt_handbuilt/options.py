"""The options of ``trt-handbuilt`` (``backend.*``)."""
from __future__ import annotations

from dataclasses import dataclass

from backends.trt_common.options import TrtOptions
from harness.sdk import choice

ATTENTIONS = ("explicit", "fused")  # matmul-softmax-matmul | TensorRT's attention layer (IAttention)


@dataclass
class HandbuiltOptions(TrtOptions):
    mode: str = choice("auto", "engine", "evaluator")  # auto: engine on CUDA (or task=build), evaluator on CPU
    fuse_qkv: bool = True  # one [q;k;v] matmul instead of three
    attention: str = choice(*ATTENTIONS)
