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

from harness.sdk import UserError, family_of, graph_problem, rope_tables
from harness.sdk import head_dim as model_head_dim

ONNX_BACKEND = "onnxruntime"


def check_supported(config, max_seq: int = 0, attention: str = "explicit", fused_ops: bool = False) -> None:
    """Refuse, before any export, what this graph cannot rebuild (harness/model/families.py), in one line."""
    from harness.sdk import short_windows, softcaps

    problem = graph_problem(config, max_seq, ONNX_BACKEND)
    if problem is None and attention == "gqa" and (softcaps(config) or short_windows(config, max_seq)):
        problem = "soft-capping or a sliding window shorter than the cache (GroupQueryAttention gets neither here)"
        fix = "use backend.attention=explicit"
    else:
        fix = "use a checkpoint of a described family (docs/models.md), or the hf-flashattn-staticcache backend"
    family = family_of(config)
    if problem is None and fused_ops and (family.fused_qkv or family.fused_gate_up or family.qk_norm
                                          or family.sandwich_norms or family.norm_offset or family.embed_scale):
        problem = f"backend.fused_ops builds the plain Llama layer, not the {family.name} one"
        fix = "drop backend.fused_ops"
    if problem:
        raise UserError(f"the ONNX export cannot rebuild this model: {problem}", fix)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, cos, sin):
    """HF's RoPE on the first ``cos.shape[-1]`` channels of each head (all of them unless rotary is partial).
    x [B, H, S, D] with cos/sin [B, 1, S, R], or x [B, S, H, D] with cos/sin [B, S, 1, R]."""
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat([x_rot * cos + rotate_half(x_rot) * sin, x_pass], dim=-1)


GRAPH_INPUTS = 4  # graph inputs before the caches, in either form (io_names)


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

    def __init__(self, hf_model, max_seq: int = 0, attention: str = "explicit"):
        super().__init__()
        cfg = hf_model.config
        self.max_seq = max_seq or cfg.max_position_embeddings
        check_supported(cfg, self.max_seq, attention)
        from harness.sdk import layer_types, sliding_window, softcaps

        self.hf = hf_model
        self.attention = attention
        self.family = family_of(cfg)
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv = cfg.num_key_value_heads
        self.head_dim = model_head_dim(cfg)
        self.layer_types = layer_types(cfg)
        self.windows = [sliding_window(cfg, i) for i in range(self.num_layers)]
        self.attn_cap = softcaps(cfg).get("attention logit soft-capping")
        self.final_cap = softcaps(cfg).get("final logit soft-capping")
        for kind, (cos, sin) in rope_tables(hf_model, self.max_seq).items():
            self.register_buffer(f"cos_{kind}", cos, persistent=False)
            self.register_buffer(f"sin_{kind}", sin, persistent=False)

    def _rope(self, position_ids, unsqueeze_dim: int):
        """Per layer type: cos/sin gathered at ``position_ids`` [B, S], broadcastable to q and k."""
        return {kind: (getattr(self, f"cos_{kind}")[position_ids].unsqueeze(unsqueeze_dim),
                       getattr(self, f"sin_{kind}")[position_ids].unsqueeze(unsqueeze_dim))
                for kind in dict.fromkeys(self.layer_types)}

    def _qkv(self, attn, h):
        """q [B, S, H, D], k and v [B, S, Hkv, D] before RoPE, as the family projects (and normalises) them."""
        batch, seq = h.shape[:2]
        if self.family.fused_qkv:
            q, k, v = attn.qkv_proj(h).split([self.num_heads * self.head_dim, self.num_kv * self.head_dim,
                                              self.num_kv * self.head_dim], dim=-1)
        else:
            q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
        q = q.view(batch, seq, self.num_heads, self.head_dim)
        k = k.view(batch, seq, self.num_kv, self.head_dim)
        v = v.view(batch, seq, self.num_kv, self.head_dim)
        if self.family.qk_norm:  # per head, over D
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q, k, v

    # One step in three parts: ``prologue`` (embedding and what every layer reads), ``layer_step`` (one decoder
    # layer) and ``epilogue`` (final norm and lm_head). ``forward`` chains them; the layerwise export
    # (layerwise.py) traces each part once and repeats the layer's ONNX nodes, so both run this same code.
    # ``context`` maps names to the tensors the layers and the epilogue read: the graph inputs and the prologue's
    # derived tensors.

    def prologue(self, input_ids, position_ids, cache_position, attention_mask) -> tuple[tuple, dict]:
        """(state, derived): state [(hidden [B, S, H])] flows through the layers; derived: cos/sin per layer type
        [B, 1, S, R] and the attention masks [B, 1, S, T] (one per window shorter than the cache)."""
        batch = input_ids.shape[0]
        hidden = self.hf.model.embed_tokens(input_ids)  # [B, S, H] (Gemma's module scales by sqrt(H) itself)
        derived = self._rope_context(position_ids, 1)
        used = attention_mask.shape[1]  # T: slots in use after this call's write
        slots = torch.arange(used, device=input_ids.device)
        # [B, 1, S, T]: slot k visible to query q iff written no later than q's slot and not padding
        allowed = (slots.view(1, 1, 1, -1) <= cache_position.view(1, 1, -1, 1)) \
            & (attention_mask.view(batch, 1, 1, used) > 0)
        derived["mask"] = allowed
        for w in self._short_windows():  # HF: key within w - 1 slots back
            derived[f"mask_{w}"] = allowed & (slots.view(1, 1, 1, -1) > cache_position.view(1, 1, -1, 1) - w)
        return (hidden,), derived

    def _rope_context(self, position_ids, unsqueeze_dim: int) -> dict:
        context = {}
        for kind, (cos, sin) in self._rope(position_ids, unsqueeze_dim).items():
            context[f"cos_{kind}"], context[f"sin_{kind}"] = cos, sin
        return context

    def _short_windows(self) -> list[int]:
        return sorted(w for w in set(self.windows) if w and w < self.max_seq)

    def layer_modules(self, i: int) -> dict:
        """What layer ``i`` computes with (modules and tensors); layers of one kind differ only in these."""
        return {"layer": self.hf.model.layers[i]}

    def layer_reads(self, i: int) -> tuple[str, ...]:
        """The context names layer ``i`` reads."""
        window = self.windows[i]
        mask = f"mask_{window}" if window in self._short_windows() else "mask"
        kind = self.layer_types[i]
        return "cache_position", f"cos_{kind}", f"sin_{kind}", mask

    def layer_kind(self, i: int) -> tuple:
        """Layers of one kind are the same graph with other weights (what the layerwise export repeats)."""
        mods = self.layer_modules(i)
        modules = {k: m for k, m in mods.items() if isinstance(m, nn.Module)}
        tensors = {k: t for k, t in mods.items() if not isinstance(t, nn.Module)}
        tensors.update((f"{k}.{name}", t) for k, m in modules.items()
                       for name, t in m.state_dict(keep_vars=True).items())
        shapes = tuple((name, tuple(t.shape), t.dtype) for name, t in tensors.items())
        return (self.layer_reads(i), repr(modules), shapes, float(self.hf.model.layers[i].self_attn.scaling))

    def layer_step(self, i: int, mods: dict, state: tuple, context: dict, past_key, past_value):
        """HF's decoder layer ``i`` around this graph's attention: (state, present_key, present_value)."""
        (hidden,) = state
        layer = mods["layer"]
        cache_position, cos, sin, mask = (context[name] for name in self.layer_reads(i))
        batch, seq = hidden.shape[:2]
        attn = layer.self_attn
        q, k, v = (t.transpose(1, 2) for t in self._qkv(attn, layer.input_layernorm(hidden)))  # [B, H(kv), S, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # index_put on [B, H, L, D] exports as one ScatterND whose output is the present tensor
        # (index_copy_ would export as Transpose -> ScatterND -> Transpose: two full-cache copies).
        k_all = torch.ops.aten.index_put(past_key, [None, None, cache_position], k)
        v_all = torch.ops.aten.index_put(past_value, [None, None, cache_position], v)
        used = mask.shape[-1]  # T: slots in use after this call's write
        out = self._attend(q, k_all[:, :, :used], v_all[:, :, :used], mask, attn.scaling)
        out = out.transpose(1, 2).reshape(batch, seq, -1)
        return (self._residual_mlp(layer, hidden, attn.o_proj(out)),), k_all, v_all

    def _residual_mlp(self, layer, hidden, attn_out):
        """The rest of HF's decoder layer after the attention's output projection."""
        if self.family.sandwich_norms:
            hidden = hidden + layer.post_attention_layernorm(attn_out)
            return hidden + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(hidden)))
        hidden = hidden + attn_out
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    EPILOGUE_READS: tuple[str, ...] = ()

    def epilogue(self, state: tuple, context: dict):
        """logits [B, V] of the last position."""
        (hidden,) = state
        return self._logits(hidden[:, -1:, :])

    def _logits(self, last_hidden):  # [B, 1, H] -> [B, V]
        logits = self.hf.lm_head(self.hf.model.norm(last_hidden))[:, 0, :]
        if self.final_cap:
            logits = torch.tanh(logits / self.final_cap) * self.final_cap
        return logits

    def forward(self, input_ids, position_ids, input_3, input_4, *past):
        """The graph inputs (io_names: cache_position and attention_mask here; seqlens_k and
        total_sequence_length in the GroupQueryAttention graphs), then the caches (one varargs tuple for
        torch.export)."""
        inputs = (input_ids, position_ids, input_3, input_4)
        state, derived = self.prologue(*inputs)
        context = {**dict(zip(self.input_names(), inputs)), **derived}
        presents = []
        for i in range(self.num_layers):
            state, k_all, v_all = self.layer_step(i, self.layer_modules(i), state, context, past[2 * i],
                                                  past[2 * i + 1])
            presents += [k_all, v_all]
        return (self.epilogue(state, context), *presents)

    def input_names(self) -> list[str]:
        """The graph inputs before the caches (io_names)."""
        return io_names(0, self.attention)[0]

    def _attend(self, q, k, v, allowed, scaling):
        groups = self.num_heads // self.num_kv
        batch, _, seq, dim = q.shape
        # grouped-query attention without repeating K/V: fold the group into the query axis
        qg = q.reshape(batch, self.num_kv, groups * seq, dim)
        # QK^T in the model dtype (as HF eager does), softmax in fp32: never upcast the cache itself
        scores = (torch.matmul(qg, k.transpose(-1, -2)) * scaling).float()  # [B, Hkv, G*S, T]
        if self.attn_cap:
            scores = torch.tanh(scores / self.attn_cap) * self.attn_cap
        scores = scores.view(batch, self.num_kv, groups, seq, -1)
        scores = scores.masked_fill(~allowed.view(batch, 1, 1, seq, -1), torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1).to(v.dtype).view(batch, self.num_kv, groups * seq, -1)
        out = torch.matmul(probs, v).view(batch, self.num_kv * groups, seq, v.shape[-1])
        return out  # [B, H, S, D]


class GqaStaticCacheDecoder(StaticCacheDecoder):
    """The same layers with ORT's GroupQueryAttention (see gqa.py): rows are right-padded, each with its own length.

    Graph I/O: input_ids / position_ids [B, S]; seqlens_k [B] int32 (row length after this call - 1);
    total_sequence_length [] int32 (largest row length after this call); past_* as above -> logits [B, V] of each
    row's last real token (the prompt's last token, or the one decoded token).
    """

    def prologue(self, input_ids, position_ids, seqlens_k, total_sequence_length) -> tuple[tuple, dict]:
        """(state, derived): [(hidden [B, S, H])], cos/sin per layer type [B, S, 1, R]."""
        return (self.hf.model.embed_tokens(input_ids),), self._rope_context(position_ids, 2)

    def layer_reads(self, i: int) -> tuple[str, ...]:
        kind = self.layer_types[i]
        return "seqlens_k", "total_sequence_length", f"cos_{kind}", f"sin_{kind}"

    def layer_step(self, i: int, mods: dict, state: tuple, context: dict, past_key, past_value):
        """HF's layer with RoPE on q and k, then the fused op."""
        from backends.onnx_export.gqa import group_query_attention

        (hidden,) = state
        layer = mods["layer"]
        seqlens_k, total_sequence_length, cos, sin = (context[name] for name in self.layer_reads(i))
        batch, seq = hidden.shape[:2]
        attn = layer.self_attn
        q, k, v = self._qkv(attn, layer.input_layernorm(hidden))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # [B, S, H, D]: no transposes
        out, k_all, v_all = group_query_attention(q.reshape(batch, seq, -1), k.reshape(batch, seq, -1),
                                                  v.reshape(batch, seq, -1), past_key, past_value, seqlens_k,
                                                  total_sequence_length, None, None, self.num_heads, self.num_kv,
                                                  float(attn.scaling))
        return (self._residual_mlp(layer, hidden, attn.o_proj(out)),), k_all, v_all

    EPILOGUE_READS = ("seqlens_k", "position_ids")

    def epilogue(self, state: tuple, context: dict):
        hidden = state[0]
        seqlens_k, position_ids = (context[name] for name in self.EPILOGUE_READS)
        batch = hidden.shape[0]
        # Right-padded rows: a token's position is its slot, so row b's last token this call sits at index
        # seqlens_k[b] - position_ids[b, 0]. (Not min(seqlens_k, S-1): S comes from a shape, ORT computes it on the
        # CPU and the copy to the GPU that follows rules out CUDA-graph capture.)
        last = (seqlens_k.long() - position_ids[:, 0]).view(batch, 1, 1).expand(batch, 1, hidden.shape[-1])
        return self._logits(torch.gather(hidden, 1, last))


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
