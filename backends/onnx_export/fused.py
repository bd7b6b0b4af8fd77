"""The GroupQueryAttention graph with ONNX Runtime's other fused ops (``backend.fused_ops=true``).

Why: with a decode step captured as a CUDA graph, its time is set by how many kernels it launches, not by the bytes
it reads (on an H100 the step is flat from 1 to 32 rows). Written out, each layer is ~48 kernels: RMSNorm alone is
nine (two Casts, Pow, ReduceMean, Add, Sqrt, Reciprocal, two Muls), RoPE a dozen more. Here each layer is:

    SkipSimplifiedLayerNormalization (residual add + RMSNorm, one kernel)
    one q/k/v GEMM -> GroupQueryAttention (RoPE inside: do_rotary with cos/sin tables from HF's rotary module)
    o_proj GEMM -> SkipSimplifiedLayerNormalization
    one gate/up GEMM -> SiLU(gate) * up -> down GEMM

The maths stays HF's: the GEMMs use HF's weights (q/k/v and gate/up concatenated along the output axis, biases too),
the activation is HF's ``act_fn``, the cos/sin tables are HF's rotary module evaluated at every cache slot (llama3
scaling included), and the norm uses HF's weight and epsilon. What moves is rounding: ORT's fused norm adds the
residual and normalises in float32 before one rounding to the model dtype (HF rounds the sum first, then again
after normalising), and its rotary kernel works in the model dtype. The export check bounds the difference like
every other export's. The first layer's input norm has no residual to add and stays HF's module (ONNX's
SimplifiedLayerNormalization is an ORT op in the standard domain, which onnx.checker rejects).
"""
from __future__ import annotations

import torch
from torch import nn

from backends.onnx_export.gqa import FLOAT_TYPES, contrib_op, group_query_attention
from backends.onnx_export.graph import GqaStaticCacheDecoder

OP = "enginebench::skip_rms_norm"


@torch.library.custom_op(OP, mutates_args=())
def skip_rms_norm(input: torch.Tensor, skip: torch.Tensor, gamma: torch.Tensor, epsilon: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """ORT's SkipSimplifiedLayerNormalization: (RMSNorm(input + skip) * gamma, input + skip), float32 inside."""
    total = input.float() + skip.float()
    normed = total * torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + epsilon)
    return (normed * gamma.float()).to(input.dtype), total.to(input.dtype)


@skip_rms_norm.register_fake
def _(input, skip, gamma, epsilon):
    return torch.empty_like(input), torch.empty_like(input)


def _schema():
    from onnx.defs import OpSchema

    param = OpSchema.FormalParameter
    return OpSchema("SkipSimplifiedLayerNormalization", "com.microsoft", 1,
                    inputs=[param(n, "T") for n in ("input", "skip", "gamma")],
                    outputs=[param("output", "T"), param("mean", "U"), param("inv_std_var", "U"),
                             param("input_skip_bias_sum", "T")],
                    type_constraints=[("T", FLOAT_TYPES, ""), ("U", ["tensor(float)"], "")],
                    attributes=[OpSchema.Attribute("epsilon", OpSchema.AttrType.FLOAT, "")])


def onnx_translation() -> dict:
    """One com.microsoft.SkipSimplifiedLayerNormalization node; outputs 1-2 (mean, inv_std_var) are blanked
    after export by :func:`blank_unused_norm_outputs` (ORT's CUDA kernel does not produce them)."""
    node = contrib_op(_schema())

    def translate(input, skip, gamma, epsilon: float):
        out, _mean, _inv_std, total = node(input, skip, gamma, epsilon=epsilon, _outputs=4)
        return out, total

    return {torch.ops.enginebench.skip_rms_norm.default: translate}


def blank_unused_norm_outputs(model) -> int:
    """Give the unused statistics outputs of every SkipSimplifiedLayerNormalization the empty name ONNX uses for
    an omitted optional output; returns how many were blanked."""
    consumed = {name for node in model.graph.node for name in node.input}
    consumed |= {out.name for out in model.graph.output}
    blanked = 0
    for node in model.graph.node:
        if node.op_type == "SkipSimplifiedLayerNormalization":
            for k in (1, 2):
                if k < len(node.output) and node.output[k] and node.output[k] not in consumed:
                    node.output[k] = ""
                    blanked += 1
    return blanked


class FusedGqaStaticCacheDecoder(GqaStaticCacheDecoder):
    """Same graph I/O as :class:`GqaStaticCacheDecoder`; fewer, fused nodes (module docstring)."""

    def __init__(self, hf_model, max_seq: int):
        if max_seq < 1:
            raise ValueError(f"the fused graph needs the cache length for its RoPE tables, got max_seq={max_seq}")
        super().__init__(hf_model, max_seq, "gqa")
        body = hf_model.model
        self.qkv, self.gate_up = nn.ModuleList(), nn.ModuleList()
        for layer in body.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.qkv.append(_concatenated(attn.q_proj, attn.k_proj, attn.v_proj))
            self.gate_up.append(_concatenated(mlp.gate_proj, mlp.up_proj))
        # HF's rotary module at every slot: [L, D] (the halves repeat) -> the [L, D/2] tables ORT's op reads
        probe = torch.zeros(1, dtype=next(hf_model.parameters()).dtype)
        cos, sin = body.rotary_emb(probe, torch.arange(max_seq).view(1, -1))
        half = self.head_dim // 2
        self.register_buffer("cos_cache", cos[0, :, :half].contiguous(), persistent=False)
        self.register_buffer("sin_cache", sin[0, :, :half].contiguous(), persistent=False)

    def prologue(self, input_ids, position_ids, seqlens_k, total_sequence_length) -> tuple[tuple, dict]:
        """(state, derived): state (normed, residual), each [B, S, H]; RoPE happens inside the attention op."""
        hidden = self.hf.model.embed_tokens(input_ids)
        return (self.hf.model.layers[0].input_layernorm(hidden), hidden), {}

    def layer_modules(self, i: int) -> dict:
        """Layer ``i`` ends with the next layer's input norm (the final norm after the last layer)."""
        layers = self.hf.model.layers
        return {"layer": layers[i], "qkv": self.qkv[i], "gate_up": self.gate_up[i],
                "next_norm": layers[i + 1].input_layernorm if i + 1 < len(layers) else self.hf.model.norm,
                "cos_cache": self.cos_cache, "sin_cache": self.sin_cache}

    def layer_reads(self, i: int) -> tuple[str, ...]:
        return "seqlens_k", "total_sequence_length"

    def layer_kind(self, i: int) -> tuple:
        norms = (self.hf.model.layers[i].post_attention_layernorm, self.layer_modules(i)["next_norm"])
        return (*super().layer_kind(i), tuple(float(n.variance_epsilon) for n in norms))

    def layer_step(self, i: int, mods: dict, state: tuple, context: dict, past_key, past_value):
        """One packed q/k/v GEMM into the op (RoPE inside: a token's position is its slot), then the two fused
        residual norms around the MLP."""
        normed, residual = state
        layer = mods["layer"]
        seqlens_k, total_sequence_length = (context[name] for name in self.layer_reads(i))
        attn, mlp = layer.self_attn, layer.mlp
        out, k_all, v_all = group_query_attention(mods["qkv"](normed), None, None, past_key, past_value, seqlens_k,
                                                  total_sequence_length, mods["cos_cache"], mods["sin_cache"],
                                                  self.num_heads, self.num_kv, float(attn.scaling))
        norm = layer.post_attention_layernorm
        normed, residual = skip_rms_norm(attn.o_proj(out), residual, norm.weight, float(norm.variance_epsilon))
        gate, up = mods["gate_up"](normed).chunk(2, dim=-1)
        norm = mods["next_norm"]
        normed, residual = skip_rms_norm(mlp.down_proj(mlp.act_fn(gate) * up), residual, norm.weight,
                                         float(norm.variance_epsilon))
        return (normed, residual), k_all, v_all  # after the last layer, normed has the final norm applied

    def _logits(self, last_normed):
        return self.hf.lm_head(last_normed)[:, 0, :]


def _concatenated(*linears: nn.Linear) -> nn.Linear:
    """One Linear whose output is the given Linears' outputs side by side (HF's weights, copied once)."""
    first = linears[0]
    fused = nn.Linear(first.in_features, sum(lin.out_features for lin in linears), bias=first.bias is not None,
                      dtype=first.weight.dtype, device=first.weight.device)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([lin.weight for lin in linears]))
        if first.bias is not None:
            fused.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return fused.requires_grad_(False)
