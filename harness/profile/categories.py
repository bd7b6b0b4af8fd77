"""Which category a kernel (on CUDA) or an operator (on the CPU) belongs to: the rule behind "where the time goes".

Six categories, the first rule that matches a name (case-insensitive) wins, in this order:

0. torch's view operators (``aten::view``, ``aten::transpose``, ``aten::reshape``, ...: no data moves) and
   position ranges (arange, iota) are ``other``; Inductor's fused kernels that do arithmetic (``triton_poi_fused``
   / ``triton_red_fused`` / ``triton_per_fused`` with add, mul, mean, rsqrt, ... in the name) are
   ``norm_elementwise``;
1. ``copy``: memcpy / memset, copy, clone, cat / concat, gather / index_put / index_copy / scatter / embedding,
   and the ONNX data-movement ops (Reshape, Expand, Slice, Split, Concat, ScatterND, Gather, Transpose);
2. ``sampling``: argmax, top-k, sort, multinomial (the token choice that feeds the next step);
3. ``attention``: flash / fmha / mha / attention / sdpa / softmax (softmax runs inside unfused attention; a fused
   kernel's GEMMs count here because its name says attention first);
4. ``gemm``: gemm / gemv / matmul / mm / bmm / addmm / linear / cutlass / cublas / xmma / nvjet (cuBLAS's Hopper
   GEMMs) / MatMulNBits;
5. ``norm_elementwise``: norms, activations, rotary embedding, adds and multiplies, casts, reductions, and
   Inductor's fused pointwise / reduction kernels (``triton_poi``, ``triton_red``, ``triton_per``);
6. ``other``: everything else.

A backend whose kernels the rule misnames refines it with the optional ``kernel_category(name)`` hook (its answer
wins; None leaves the rule's). The rule is a pure function of the name, so two configurations are always sorted
alike.
"""
from __future__ import annotations

import re
from typing import Callable

CATEGORIES = ("gemm", "attention", "norm_elementwise", "copy", "sampling", "other")

_RULES = (
    ("other", r"^aten::(view|_unsafe_view|as_strided|transpose|t|reshape|expand|slice|select|unsqueeze|squeeze|"
              r"permute|split|narrow|alias|detach|flatten|unflatten)$|arange|iota"),  # views: no data moved
    ("norm_elementwise", r"^triton_(poi|red|per)_fused.*(add|mul|mean|rsqrt|pow|silu|sigmoid|exp|neg|div|sub|norm|"
                         r"cos|sin|tanh|gelu)"),  # Inductor's fused math (a fused pure copy falls through)
    ("copy", r"memcpy|memset|copy|clone|concat|catarray|scatter|gather|index_(put|copy|select|add|fill)|"
             r"index_elementwise|(^|[^a-z])embedding|"
             r"(^|[^a-z])(cat|index|transpose|reshape|expand|slice|split|contiguous|to)([^a-z]|$)|"
             r"splitsmallinner"),  # ONNX Runtime's Split kernel (_SplitSmallInnerKernel)
    ("sampling", r"argmax|arg_max|topk|top_k|(^|[^a-z])sort|multinomial|sampling"),
    ("attention", r"flash|fmha|attention|attn|sdpa|softmax|(^|[^a-z])mha([^a-z]|$)"),  # mha: ORT's GQA decode kernel
    ("gemm", r"gemm|gemv|matmul|cutlass|cublas|xmma|nvjet|(^|[^a-z])(mm|bmm|addmm|baddbmm|linear|int4mm|_weight_int"
             r"\w*mm)([^a-z]|$)"),
    ("norm_elementwise", r"norm|rms|elementwise|vectorized|pointwise|triton_(poi|red|per)|silu|gelu|swish|sigmoid|"
                         r"tanh|rotary|rope|(^|[^a-z])(cos|sin|add|sub|mul|div|neg|exp|pow|rsqrt|sqrt|mean|sum|cast|"
                         r"where|reduce\w*|fill_?|zero_?|ones_like|zeros_like|clamp|relu|erf)([^a-z]|$)"),
)
_COMPILED = tuple((category, re.compile(pattern, re.IGNORECASE)) for category, pattern in _RULES)


def default_category(name: str) -> str:
    """The category of a kernel or operator name under the rule above."""
    for category, pattern in _COMPILED:
        if pattern.search(name):
            return category
    return "other"


def categorizer(refine: Callable[[str], str | None] | None = None) -> Callable[[str], str]:
    """The rule with a backend's refinement in front: ``refine(name)`` answers first; None or an unknown category
    falls back to :func:`default_category`."""
    def category_of(name: str) -> str:
        if refine is not None:
            answer = refine(name)
            if answer in CATEGORIES:
                return answer
        return default_category(name)

    return category_of
