"""FlashAttention over HF's ``StaticCache`` through transformers' own extension point (``AttentionInterface``).

How one attention layer runs with ``attn_implementation=enginebench_static_<kernel>`` (``HF_NAMES``):
1. HF's attention module computes q/k/v and RoPE, then ``StaticCache.update`` writes the new K/V into the cache in
   place (HF's code, unchanged) and hands our function the whole cache.
2. Our function calls one kernel op (flash_ops.py) that reads only each row's filled slots, given two small device
   tensors that ride along as model kwargs: ``eb_kv_start`` [B+1] (where each row's first real key is) and
   ``eb_kv_used`` [B] (how many real keys it has). No [B, L] mask is built: our names are not in transformers'
   mask registry, so its masking code returns None for them.

The cache stays HF's ``StaticCache`` object; only its storage is allocated token-major, [B, L, Hkv, D], and handed
to HF as the [B, Hkv, L, D] view it expects (``use_token_major_storage``). The varlen kernels need one token axis
across rows so that a row can start after its left padding (``kv_start`` = b*L + pad); HF's own layout,
head-major, has no such axis. HF's in-place ``index_copy_`` writes through the view.
"""
from __future__ import annotations

import torch

from backends.hf_staticcache.flash_ops import OPS

# Names registered in transformers. None may contain "flash": transformers takes any such name for one of its own
# FlashAttention integrations and tries to import a flash-attn package or a hub kernel for it (seen in 5.17).
HF_NAMES = {"flash_attention_2": "enginebench_static_fa2", "flash_attention_4": "enginebench_static_fa4",
            "torch_flash": "enginebench_static_torch_fa", "reference": "enginebench_static_reference"}


class FillState:
    """Per-row fill of the static cache, on the device at fixed addresses (CUDA graphs replay them)."""

    def __init__(self, batch: int, cache_len: int, device: str):
        self.batch, self.cache_len = batch, cache_len
        self.kv_start = torch.arange(0, (batch + 1) * cache_len, cache_len, dtype=torch.int32, device=device)
        self.kv_used = torch.zeros(batch, dtype=torch.int32, device=device)

    def begin(self, pad: torch.Tensor, prompt_len: int) -> None:
        """After a prefill of ``prompt_len`` slots whose first ``pad[b]`` are row b's left padding ([B, 1])."""
        pad = pad.view(-1).to(torch.int32)
        rows = torch.arange(self.batch, dtype=torch.int32, device=pad.device)
        self.kv_start[: self.batch].copy_(rows * self.cache_len + pad)
        self.kv_used.copy_(prompt_len - pad)

    def advance(self) -> None:
        """Before a decode step: the slot it writes becomes one more real key of every row."""
        self.kv_used.add_(1)

    def kwargs(self) -> dict[str, torch.Tensor]:
        return {"eb_kv_start": self.kv_start, "eb_kv_used": self.kv_used}


def _attention_function(op):
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        # query [B, H, S, D]; key/value: the whole cache as HF sees it, [B, Hkv, L, D] views of [B, L, Hkv, D]
        kv_start, kv_used = kwargs.get("eb_kv_start"), kwargs.get("eb_kv_used")
        if kv_start is None or kv_used is None:
            raise RuntimeError("static-cache FlashAttention needs eb_kv_start/eb_kv_used model kwargs "
                               "(the hf-flashattn-staticcache backend passes them)")
        batch, _, s, d = query.shape
        cache_len, heads_kv = key.shape[2], key.shape[1]
        q = query.transpose(1, 2).contiguous()  # [B, S, H, D]
        k = key.transpose(1, 2).reshape(batch * cache_len, heads_kv, d)  # a view when the storage is token-major
        v = value.transpose(1, 2).reshape(batch * cache_len, heads_kv, value.shape[-1])
        scale = scaling if scaling is not None else d ** -0.5
        out = op(q, k, v, kv_start, kv_used, cache_len, s > 1, scale)  # [B, S, H, D]
        return out, None

    return attention


def register_attention_functions() -> None:
    """Register one attention function per kernel under ``HF_NAMES`` (idempotent)."""
    from transformers import AttentionInterface

    for choice, name in HF_NAMES.items():
        AttentionInterface.register(name, _attention_function(OPS[choice]))


def use_token_major_storage(cache) -> None:
    """Re-allocate an initialised StaticCache's K/V as [B, L, Hkv, D], seen by HF as [B, Hkv, L, D] views."""
    for layer in cache.layers:
        for name in ("keys", "values"):
            head_major = getattr(layer, name)  # [B, Hkv, L, D]
            batch, heads_kv, cache_len, d = head_major.shape
            storage = torch.zeros(batch, cache_len, heads_kv, d, dtype=head_major.dtype, device=head_major.device)
            setattr(layer, name, None)  # free HF's head-major tensor before the next one is allocated
            with torch.enable_grad():  # a view made under no_grad may not be written in place with grad enabled
                view = storage.transpose(1, 2)
            torch._dynamo.mark_static_address(view)  # fixed address: cudagraphs must not copy the cache
            setattr(layer, name, view)
