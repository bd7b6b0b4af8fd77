"""Roofline quantities: bytes a decode step must read, FLOPs a prefill must do, and the device's copy bandwidth.

Decode is memory-bound: each step reads every matmul weight once plus the KV cache its attention kernel reads, so
the achieved bandwidth (those bytes / the step's device time) over the measured copy bandwidth says how close a
backend gets to the hardware limit. The bytes are what the kernels read, which the backend states in its
``backend_info`` (:func:`attention_reads`, in harness.sdk):

- ``kv_cache_read``: ``filled`` (FlashAttention-style kernels told each row's length read the written positions
  only) or ``allocated`` (a masked SDPA or MatMul/Softmax over a static cache reads every slot, masked or not,
  ``kv_cache_slots`` of them). Without the fact: ``filled``, the smaller count, so an unknown backend's
  bandwidth is never flattered.
- ``quant_zero_point_bits``: with weight-only quantization the weights count as stored, codes plus scales and
  zero points (harness/model/quant.py's ``weight_bytes``); zero points packed at the code width (ONNX Runtime's
  MatMulNBits) say so here, otherwise they count in the activation dtype.

Prefill is compute-bound: 2 FLOPs per weight per token plus the causal attention products.
"""
from __future__ import annotations

import time

import torch

from harness.model.quant import QuantScheme, weight_bytes
from harness.model.sources import param_count

KV_READ = "kv_cache_read"
KV_SLOTS = "kv_cache_slots"
ZERO_POINT_BITS = "quant_zero_point_bits"
KV_READS = ("filled", "allocated")


def attention_reads(kv: str, cache_slots: int | None = None, zero_point_bits: int | None = None) -> dict:
    """The backend_info facts that say what a decode step's kernels read (see the module docstring)."""
    if kv not in KV_READS:
        raise ValueError(f"kv_cache_read must be one of {KV_READS}, not {kv!r}")
    facts: dict = {KV_READ: kv}
    if cache_slots is not None:
        facts[KV_SLOTS] = int(cache_slots)
    if zero_point_bits is not None:
        facts[ZERO_POINT_BITS] = int(zero_point_bits)
    return facts


def decode_bytes_per_step(config, batch: int, context_len: float, bytes_per_elem: int,
                          quant: QuantScheme = QuantScheme(), zero_point_bits: int | None = None) -> float:
    counts = param_count(config)
    kv_elems = 2 * config.num_hidden_layers * batch * config.num_key_value_heads * counts["head_dim"] * context_len
    embed_rows = batch * config.hidden_size  # the gathered embedding rows, not the whole table
    weights = weight_bytes(config, quant, bytes_per_elem, zero_point_bits)
    return float(weights + (kv_elems + embed_rows) * bytes_per_elem)


def decode_bytes_read(config, batch: int, prompt_len: int, new_tokens: int, bytes_per_elem: int,
                      quant: QuantScheme, facts: dict | None, default_slots: int) -> float:
    """Mean bytes per decode step of a cell, read as the backend's facts say (``default_slots``: the cache
    length to assume when an ``allocated`` backend does not state it)."""
    facts = facts or {}
    if facts.get(KV_READ, "filled") == "allocated":
        context = facts.get(KV_SLOTS) or default_slots  # every slot, at every step
    else:
        context = prompt_len + new_tokens / 2  # the mean fill over the decode steps
    return decode_bytes_per_step(config, batch, context, bytes_per_elem, quant, facts.get(ZERO_POINT_BITS))


def prefill_flops(config, batch: int, prompt_len: int) -> float:
    counts = param_count(config)
    dense = 2.0 * counts["matmul"] * batch * prompt_len
    # QK^T and PV over the causal triangle: 2 products x 2 FLOPs x heads x head_dim x P^2 / 2
    attn = 2.0 * config.num_hidden_layers * batch * config.num_attention_heads * counts["head_dim"] * prompt_len ** 2
    return dense + attn


def measure_copy_bandwidth(device: str, nbytes: int = 1 << 28, repeats: int = 10) -> float:
    """Device-to-device (or host) copy bandwidth in bytes/s: read + write of ``nbytes`` per copy, best of repeats."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            seconds = time.perf_counter() - t0
        best = min(best, seconds)
    del src, dst
    return 2.0 * nbytes / best
