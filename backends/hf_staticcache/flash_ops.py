"""Attention over a static KV cache, reading only each row's filled slots: the kernel calls as torch custom ops.

Every op has the same contract, the varlen-with-``seqused_k`` form of FlashAttention:

    q         [B, S, H, D]       the new tokens' queries (S = prompt length at prefill, 1 at decode)
    k, v      [B*L, Hkv, D]      the whole static cache, token-major (row b owns slots b*L .. b*L+L-1)
    kv_start  [B+1] int32        where row b's first real key is: b*L + its left padding
    kv_used   [B]   int32        how many real keys row b has (the new tokens included)
    max_k     L                  a bound on kv_used, the cache length
    causal    prefill: query i sees key j iff j <= i + kv_used - S (bottom-right aligned); decode: False
    -> out    [B, S, H, D]

Grouped-query attention is native (H a multiple of Hkv: no repeated K/V), nothing is masked and nothing past a
row's fill is read, so a step costs O(fill) rather than O(L). Lengths are device data: replays of a CUDA graph
see new lengths. Queries of left-padding positions see no key and come out as zeros (their outputs are never read).

Registered with ``torch.library.custom_op`` and a fake (meta) implementation so that torch.compile traces through
them as single graph nodes (no graph break); torch.compile keeps a custom op's input stride order, so the cache
reaches the kernel as it is, without a copy.
``reference`` is the same contract in plain torch (float32 softmax), for CPU tests and as a readable spec.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def _row_padding(kv_start: Tensor, batch: int, cache_len: int) -> Tensor:
    """[B] int32: each row's left padding, from its start slot in the flattened cache."""
    rows = torch.arange(batch, device=kv_start.device, dtype=torch.int32)
    return kv_start[:batch] - rows * cache_len


@torch.library.custom_op("enginebench::static_attention_reference", mutates_args=())
def reference(q: Tensor, k: Tensor, v: Tensor, kv_start: Tensor, kv_used: Tensor, max_k: int, causal: bool,
              scale: float) -> Tensor:
    batch, s, heads, d = q.shape
    heads_kv, cache_len = k.shape[1], k.shape[0] // batch
    pad = _row_padding(kv_start, batch, cache_len).long()
    j = torch.arange(cache_len, device=q.device)
    slot = (pad[:, None] + j[None]).clamp(max=cache_len - 1)  # [B, L]: row b's j-th real key
    gather = slot[:, :, None, None].expand(batch, cache_len, heads_kv, d)
    keys = k.view(batch, cache_len, heads_kv, d).gather(1, gather).repeat_interleave(heads // heads_kv, dim=2)
    values = v.view(batch, cache_len, heads_kv, d).gather(1, gather).repeat_interleave(heads // heads_kv, dim=2)
    scores = torch.einsum("bshd,blhd->bhsl", q.float(), keys.float()) * scale  # [B, H, S, L]
    used = kv_used.long().view(batch, 1, 1, 1)
    allowed = j.view(1, 1, 1, -1) < used
    if causal:
        i = torch.arange(s, device=q.device).view(1, 1, -1, 1)
        allowed = allowed & (j.view(1, 1, 1, -1) <= i + used - s)
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
    return torch.einsum("bhsl,blhd->bshd", probs, values.float()).to(q.dtype)


@torch.library.custom_op("enginebench::static_attention_torch_flash", mutates_args=())
def torch_flash(q: Tensor, k: Tensor, v: Tensor, kv_start: Tensor, kv_used: Tensor, max_k: int, causal: bool,
                scale: float) -> Tensor:
    """PyTorch's own FlashAttention-2 kernel, varlen form (its signature as of torch 2.11; no newer arguments)."""
    batch, s, heads, d = q.shape
    cu_q = torch.arange(0, (batch + 1) * s, s, dtype=torch.int32, device=q.device)
    out = torch.ops.aten._flash_attention_forward(q.reshape(batch * s, heads, d), k, v, cu_q, kv_start, s, max_k,
                                                  0.0, causal, False, scale=scale, seqused_k=kv_used)[0]
    return out.view(batch, s, heads, d)


@torch.library.custom_op("enginebench::static_attention_fa4", mutates_args=())
def fa4(q: Tensor, k: Tensor, v: Tensor, kv_start: Tensor, kv_used: Tensor, max_k: int, causal: bool,
        scale: float) -> Tensor:
    """FlashAttention-4's CuTe kernels (flash-attn-4, JIT-compiled per configuration at first call)."""
    from flash_attn.cute import flash_attn_varlen_func

    # Split-KV (flash-decoding) lets a single long row fill the GPU, but FA4 has it on Blackwell only ("SplitKV
    # not supported on SM 9.0"): on Hopper one CTA per (row, KV head) walks the whole fill. The split count is
    # decided on the host from max_k, fixed per cache, so a CUDA graph replays the same plan.
    splits = 0 if torch.cuda.get_device_capability(q.device)[0] >= 10 and q.shape[1] == 1 else 1  # 0: heuristic
    out = flash_attn_varlen_func(q, k, v, cu_seqlens_k=kv_start, seqused_k=kv_used, max_seqlen_k=max_k,
                                 softmax_scale=scale, causal=causal, num_splits=splits)
    return out[0] if isinstance(out, tuple) else out


@torch.library.custom_op("enginebench::static_attention_fa2", mutates_args=())
def fa2(q: Tensor, k: Tensor, v: Tensor, kv_start: Tensor, kv_used: Tensor, max_k: int, causal: bool,
        scale: float) -> Tensor:
    """The flash-attn 2.x package: ``flash_attn_with_kvcache`` over [B, L, Hkv, D] with ``cache_leftpad``."""
    from flash_attn import flash_attn_with_kvcache

    batch, cache_len = q.shape[0], k.shape[0] // q.shape[0]
    pad = _row_padding(kv_start, batch, cache_len)
    k_cache = k.view(batch, cache_len, *k.shape[1:])
    v_cache = v.view(batch, cache_len, *v.shape[1:])
    return flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=pad + kv_used, cache_leftpad=pad,
                                   softmax_scale=scale, causal=causal)


for _op in (reference, torch_flash, fa4, fa2):
    @_op.register_fake
    def _fake(q, k, v, kv_start, kv_used, max_k, causal, scale):
        return torch.empty_like(q)

OPS = {"reference": reference, "torch_flash": torch_flash, "flash_attention_4": fa4, "flash_attention_2": fa2}
