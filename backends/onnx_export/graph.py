"""The module that is exported: one decoder step over a static KV cache, built from the HF model's own modules.

Why not HF's exportable wrappers: they keep the cache as module buffers, which become ONNX initializers; here every
layer's K and V cache is an explicit graph input with a matching ``present`` output, so the runtime owns the memory
and can update it in place (bind present to the same buffer as past).

Graph I/O (B, S and T dynamic; L = max_seq fixed at export):
    input_ids      [B, S] int64     tokens written at cache slots cache_position
    position_ids   [B, S] int64     RoPE positions (differ from slots for left-padded rows)
    cache_position [S]    int64     the cache slots written by this call (shared by all rows)
    attention_mask [B, T] int64     slots 0..T-1 in use after this call (T = fill + S): 1 = a real token of that
                                    row, 0 = left padding. Attention reads only these T slots, so its cost follows
                                    the fill, not the preallocated length L.
    past_key_i / past_value_i [B, Hkv, L, D]
 -> logits         [B, V]           last position only
    present_key_i / present_value_i [B, Hkv, L, D]

The maths is HF's: its embedding, RMSNorm, projections, rotary embedding (incl. llama3 scaling) and MLP modules
are called as they are; only the attention over the static cache (scatter + masked softmax) is written here.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from harness.sdk import UserError
from harness.sdk import head_dim as model_head_dim

SUPPORTED = ("llama", "qwen2")


def check_supported(config) -> None:
    if config.model_type not in SUPPORTED:
        raise UserError(f"the ONNX export supports Llama-family models ({', '.join(SUPPORTED)}), not "
                        f"'{config.model_type}'", "use a llama or qwen2 checkpoint/preset")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3", "linear"):
        raise UserError(f"the ONNX export does not support rope_type '{rope_type}' (supported: default, llama3, "
                        "linear)", "use a model with default or llama3 RoPE scaling")
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", False):
        raise UserError("the ONNX export does not support sliding-window attention",
                        "set use_sliding_window=false in the model config")


def io_names(num_layers: int, attention: str = "explicit") -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "position_ids"]
    if attention == "explicit":
        inputs += ["cache_position", "attention_mask"]
    else:
        inputs += ["seqlens_k", "total_sequence_length"]
    outputs = ["logits"]
    for i in range(num_layers):
        inputs += [f"past_key_{i}", f"past_value_{i}"]
        outputs += [f"present_key_{i}", f"present_value_{i}"]
    return inputs, outputs


class StaticCacheDecoder(nn.Module):
    """The explicit-attention graph (runs on every ONNX consumer, TensorRT's parser included)."""

    def __init__(self, hf_model):
        super().__init__()
        check_supported(hf_model.config)
        self.hf = hf_model
        cfg = hf_model.config
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv = cfg.num_key_value_heads
        self.head_dim = model_head_dim(cfg)

    def _layers(self, hidden, attend):
        """HF's decoder layers around ``attend(i, attn_module, normed_hidden) -> (out [B, S, H*D], k_all, v_all)``."""
        presents = []
        for i, layer in enumerate(self.hf.model.layers):
            out, k_all, v_all = attend(i, layer.self_attn, layer.input_layernorm(hidden))
            presents += [k_all, v_all]
            hidden = hidden + layer.self_attn.o_proj(out)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return hidden, presents

    def _logits(self, last_hidden):  # [B, 1, H] -> [B, V]
        return self.hf.lm_head(self.hf.model.norm(last_hidden))[:, 0, :]

    def forward(self, input_ids, position_ids, cache_position, attention_mask, *past):
        body = self.hf.model
        batch, seq = input_ids.shape
        hidden = body.embed_tokens(input_ids)  # [B, S, H]
        cos, sin = body.rotary_emb(hidden, position_ids)
        used = attention_mask.shape[1]  # T: slots in use after this call's write
        slots = torch.arange(used, device=input_ids.device)
        # [B, 1, S, T]: slot k visible to query q iff written no later than q's slot and not padding
        allowed = (slots.view(1, 1, 1, -1) <= cache_position.view(1, 1, -1, 1)) \
            & (attention_mask.view(batch, 1, 1, used) > 0)

        def attend(i, attn, h):
            q = attn.q_proj(h).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(batch, seq, self.num_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(batch, seq, self.num_kv, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            # index_put on [B, H, L, D] exports as one ScatterND whose output is the present tensor
            # (index_copy_ would export as Transpose -> ScatterND -> Transpose: two full-cache copies).
            k_all = torch.ops.aten.index_put(past[2 * i], [None, None, cache_position], k)
            v_all = torch.ops.aten.index_put(past[2 * i + 1], [None, None, cache_position], v)
            out = self._attend(q, k_all[:, :, :used], v_all[:, :, :used], allowed, attn.scaling)
            return out.transpose(1, 2).reshape(batch, seq, -1), k_all, v_all

        hidden, presents = self._layers(hidden, attend)
        return (self._logits(hidden[:, -1:, :]), *presents)

    def _attend(self, q, k, v, allowed, scaling):
        groups = self.num_heads // self.num_kv
        batch, _, seq, dim = q.shape
        # grouped-query attention without repeating K/V: fold the group into the query axis
        qg = q.reshape(batch, self.num_kv, groups * seq, dim)
        # QK^T in the model dtype (as HF eager does), softmax in fp32: never upcast the cache itself
        scores = (torch.matmul(qg, k.transpose(-1, -2)) * scaling).float()  # [B, Hkv, G*S, T]
        scores = scores.view(batch, self.num_kv, groups, seq, -1)
        scores = scores.masked_fill(~allowed.view(batch, 1, 1, seq, -1), torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1).to(v.dtype).view(batch, self.num_kv, groups * seq, -1)
        out = torch.matmul(probs, v).view(batch, self.num_kv * groups, seq, dim)
        return out  # [B, H, S, D]


class GqaStaticCacheDecoder(StaticCacheDecoder):
    """The same layers with ORT's GroupQueryAttention (see gqa.py): rows are right-padded, each with its own length.

    Graph I/O: input_ids / position_ids [B, S]; seqlens_k [B] int32 (row length after this call - 1);
    total_sequence_length [] int32 (largest row length after this call); past_* as above -> logits [B, V] of each
    row's last real token (the prompt's last token, or the one decoded token).
    """

    def forward(self, input_ids, position_ids, seqlens_k, total_sequence_length, *past):
        batch = input_ids.shape[0]
        hidden = self.hf.model.embed_tokens(input_ids)
        attend = self._attention(hidden, position_ids, seqlens_k, total_sequence_length, past)
        hidden, presents = self._layers(hidden, attend)
        # Right-padded rows: a token's position is its slot, so row b's last token this call sits at index
        # seqlens_k[b] - position_ids[b, 0]. (Not min(seqlens_k, S-1): S comes from a shape, ORT computes it on the
        # CPU and the copy to the GPU that follows rules out CUDA-graph capture.)
        last = (seqlens_k.long() - position_ids[:, 0]).view(batch, 1, 1).expand(batch, 1, hidden.shape[-1])
        return (self._logits(torch.gather(hidden, 1, last)), *presents)

    def _attention(self, hidden, position_ids, seqlens_k, total_sequence_length, past):
        """``attend`` for :meth:`_layers`: HF's RoPE on q and k, then the fused op."""
        from backends.onnx_export.gqa import group_query_attention

        batch, seq = hidden.shape[:2]
        cos, sin = self.hf.model.rotary_emb(hidden, position_ids)

        def attend(i, attn, h):
            q = attn.q_proj(h).view(batch, seq, self.num_heads, self.head_dim)
            k = attn.k_proj(h).view(batch, seq, self.num_kv, self.head_dim)
            q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=2)  # [B, S, H, D]: no transposes
            return group_query_attention(q.reshape(batch, seq, -1), k.reshape(batch, seq, -1), attn.v_proj(h),
                                         past[2 * i], past[2 * i + 1], seqlens_k, total_sequence_length, None, None,
                                         self.num_heads, self.num_kv, float(attn.scaling))

        return attend


def check_gqa_head_size(attention: str, head_dim: int) -> None:
    """ORT's GroupQueryAttention kernels (CUDA and CPU alike) need head_size % 8 == 0: refused before minutes of
    export, not at the first run with ORT's raw "head_size must be a multiple of 8"."""
    if attention == "gqa" and head_dim % 8:
        raise UserError(f"ORT's GroupQueryAttention needs a head size that is a multiple of 8; this model's "
                        f"is {head_dim}", "use backend.attention=explicit for this model")


def example_inputs(config, dtype, device, max_seq: int, attention: str = "explicit", batch: int = 2, seq: int = 3):
    """Inputs for tracing; seq >= 2 so the sequence axis is not specialised to 1."""
    head_dim = model_head_dim(config)
    ids = torch.ones(batch, seq, dtype=torch.long, device=device)
    pos = torch.arange(seq, device=device).expand(batch, seq).contiguous()
    past = [torch.zeros(batch, config.num_key_value_heads, max_seq, head_dim, dtype=dtype, device=device)
            for _ in range(2 * config.num_hidden_layers)]
    if attention == "gqa":  # a first prompt: every row seq long
        seqlens = torch.full((batch,), seq - 1, dtype=torch.int32, device=device)
        return (ids, pos, seqlens, torch.tensor(seq, dtype=torch.int32), *past)
    mask = torch.ones(batch, seq + 2, dtype=torch.long, device=device)  # T distinct from S and L: stays dynamic
    return (ids, pos, torch.arange(seq, device=device), mask, *past)
