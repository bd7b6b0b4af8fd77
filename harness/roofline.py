"""Roofline quantities: bytes a decode step must read, FLOPs a prefill must do, and the device's copy bandwidth.

Decode is memory-bound: each step reads every matmul weight once plus the filled part of the KV cache, so the
achieved bandwidth (those bytes / step time) over the measured copy bandwidth says how close a backend gets to the
hardware limit. With weight-only quantization the weights count as stored: codes plus scales (and zero points)
(harness/quant.py's ``weight_bytes``), so a quantized backend's bandwidth fraction stays honest. Prefill is
compute-bound: 2 FLOPs per weight per token plus the causal attention products.
"""
from __future__ import annotations

import time

import torch

from harness.models import param_count
from harness.quant import QuantScheme, weight_bytes


def decode_bytes_per_step(config, batch: int, context_len: int, bytes_per_elem: int,
                          quant: QuantScheme = QuantScheme()) -> float:
    counts = param_count(config)
    kv_elems = 2 * config.num_hidden_layers * batch * config.num_key_value_heads * counts["head_dim"] * context_len
    embed_rows = batch * config.hidden_size  # the gathered embedding rows, not the whole table
    return float(weight_bytes(config, quant, bytes_per_elem) + (kv_elems + embed_rows) * bytes_per_elem)


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
