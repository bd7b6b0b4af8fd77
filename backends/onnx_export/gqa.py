"""ONNX Runtime's fused attention, ``com.microsoft.GroupQueryAttention``, as a torch custom op the exporter turns
into that one node.

Why: the attention written out as MatMul/Where/Softmax is ~20 nodes per layer, each launched from the host every
step; ORT's GroupQueryAttention writes the new K/V into the static cache in place (past and present bound to the
same buffer), attends with a fused kernel over each row's own length and takes its lengths from a device tensor,
so a decode step can be captured as a CUDA graph and replayed.

Semantics (ORT's contrib-op spec, mirrored by :func:`group_query_attention` so the module also runs in torch):
    query [B, S, Hq*D], key / value [B, S, Hkv*D]: projected; or query packed [B, S, (Hq+2*Hkv)*D] with key and
        value absent (one q/k/v GEMM feeds the op)
    cos_cache / sin_cache [L, D/2] (optional): when given (do_rotary=1), the op rotates q and k itself
        (non-interleaved halves, as HF's rotate_half) at each token's slot; absent, q and k arrive rotated
    past_key / past_value [B, Hkv, L, D]: the static cache, right-padded per row
    seqlens_k [B] int32: each row's total length after this call, minus one
    total_sequence_length [] int32: the batch's largest total length; S == total means "first prompt"
First prompt: the S tokens go to slots 0..S-1 and attention is causal (right padding after a row's real tokens is
never seen by its real queries). Later calls (S == 1 when B > 1): row b's tokens go to slots seqlens_k[b]-S+1..
seqlens_k[b], and attend to slots 0..their own.
"""
from __future__ import annotations

from typing import Optional

import torch

OP = "enginebench::group_query_attention"


@torch.library.custom_op(OP, mutates_args=())
def group_query_attention(query: torch.Tensor, key: Optional[torch.Tensor], value: Optional[torch.Tensor],
                          past_key: torch.Tensor, past_value: torch.Tensor, seqlens_k: torch.Tensor,
                          total_sequence_length: torch.Tensor, cos_cache: Optional[torch.Tensor],
                          sin_cache: Optional[torch.Tensor], num_heads: int, kv_num_heads: int, scale: float
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, seq, _ = query.shape
    dim, cache_len = past_key.shape[-1], past_key.shape[2]
    if key is None:  # packed q/k/v
        query, key, value = query.split([num_heads * dim, kv_num_heads * dim, kv_num_heads * dim], dim=-1)
    q = query.reshape(batch, seq, num_heads, dim)  # [B, S, H, D] until the scores
    k = key.reshape(batch, seq, kv_num_heads, dim)
    v = value.reshape(batch, seq, kv_num_heads, dim)
    totals = seqlens_k.long() + 1  # [B]
    first = seq == int(total_sequence_length)
    starts = torch.zeros_like(totals) if first else totals - seq  # slot of each row's first new token
    slots = starts.view(-1, 1) + torch.arange(seq, device=query.device)  # [B, S]
    if cos_cache is not None:  # a token's rotary position is its slot (rows are right-padded)
        q, k = rotate(q, cos_cache, sin_cache, slots), rotate(k, cos_cache, sin_cache, slots)
    present_k, present_v = past_key.clone(), past_value.clone()
    rows = torch.arange(batch, device=query.device).view(-1, 1)
    present_k[rows, :, slots] = k  # advanced indices first: the target is [B, S, Hkv, D], as k and v are
    present_v[rows, :, slots] = v
    q = q.transpose(1, 2)
    groups = num_heads // kv_num_heads
    keys = present_k.repeat_interleave(groups, dim=1)
    values = present_v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q.float(), keys.float().transpose(-1, -2)) * scale  # [B, Hq, S, L]
    cols = torch.arange(cache_len, device=query.device).view(1, 1, 1, -1)
    visible = (cols <= slots.view(batch, 1, seq, 1)) & (cols < totals.view(batch, 1, 1, 1))
    probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    out = torch.matmul(probs, values.float()).to(query.dtype).transpose(1, 2).reshape(batch, seq, -1)
    return out, present_k, present_v


def rotate(x: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor, positions: torch.Tensor):
    """RoPE on x [B, S, H, D] at positions [B, S], halves not interleaved (HF's rotate_half), in float32."""
    cos = cos_cache[positions].float().unsqueeze(2)  # [B, S, 1, D/2]
    sin = sin_cache[positions].float().unsqueeze(2)
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


@group_query_attention.register_fake
def _(query, key, value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache, num_heads,
      kv_num_heads, scale):
    width = num_heads * past_key.shape[-1]
    return query.new_empty(*query.shape[:2], width), torch.empty_like(past_key), torch.empty_like(past_value)


FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]


def contrib_op(schema):
    """The onnxscript op that emits one node of ORT's contrib domain, from the part of its schema declared here
    (onnx.defs does not know ORT's contrib ops)."""
    import onnxscript

    return onnxscript.values.Op(onnxscript.values.Opset(schema.domain, schema.since_version), schema.name, schema)


def _schema():
    """The part of ORT's GroupQueryAttention schema used here."""
    from onnx.defs import OpSchema

    param = OpSchema.FormalParameter
    inputs = [param(n, "T") for n in ("query", "key", "value", "past_key", "past_value")]
    inputs += [param("seqlens_k", "M"), param("total_sequence_length", "M"), param("cos_cache", "T"),
               param("sin_cache", "T")]
    outputs = [param(n, "T") for n in ("output", "present_key", "present_value")]
    attrs = [OpSchema.Attribute(n, OpSchema.AttrType.INT, "") for n in ("num_heads", "kv_num_heads", "do_rotary")]
    attrs.append(OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, ""))
    return OpSchema("GroupQueryAttention", "com.microsoft", 1, inputs=inputs, outputs=outputs,
                    type_constraints=[("T", FLOAT_TYPES, ""), ("M", ["tensor(int32)"], "")], attributes=attrs)


def onnx_translation() -> dict:
    """The exporter's translation of the custom op: one com.microsoft.GroupQueryAttention node."""
    gqa = contrib_op(_schema())

    def translate(query, key, value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache,
                  num_heads: int, kv_num_heads: int, scale: float):
        return gqa(query, key, value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache,
                   num_heads=num_heads, kv_num_heads=kv_num_heads, scale=scale,
                   do_rotary=int(cos_cache is not None), _outputs=3)

    return {torch.ops.enginebench.group_query_attention.default: translate}
