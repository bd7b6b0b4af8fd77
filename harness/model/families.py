"""The decoder-only model families the graph backends rebuild, written as data, and what each backend refuses.

The HF backend runs whatever transformers runs; the backends that rebuild the network themselves (the ONNX export,
and through it ONNX Runtime and trt-onnx-parsed; the hand-built TensorRT network) read one :class:`Family` per
checkpoint ``model_type`` and branch on its fields, never on the family's name. A family is the Llama decoder
(RMSNorm -> attention with RoPE -> residual, RMSNorm -> gated MLP -> residual) plus the differences below:

- ``fused_qkv`` / ``fused_gate_up``: one ``qkv_proj`` ([q; k; v] rows) and one ``gate_up_proj`` ([gate; up]) (Phi-3);
- ``qk_norm``: a per-head RMSNorm on q and k before RoPE (Qwen3, Gemma 3);
- ``norm_offset``: RMSNorm scales by ``offset + w``, computed in float32 before the cast (Gemma: 1 + w);
- ``embed_scale``: embeddings multiplied by sqrt(hidden) (Gemma);
- ``sandwich_norms``: extra norms on the attention and MLP outputs, and a norm before the MLP (Gemma 3);
- ``rope_per_layer_type``: local (sliding) and global layers each with their own RoPE (Gemma 3);
- ``applies_attention_softcap``: False where HF's code ignores the config's attention soft-capping (Gemma 3).

What the config decides on top (any family): attention biases, tied embeddings, ``head_dim`` != hidden / heads, the
RoPE scaling type, partial rotary, the MLP activation, sliding windows, logit soft-capping. :func:`graph_problem`
says, before any export or build, which of these a backend cannot rebuild (one phrase naming the missing piece).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    fused_qkv: bool = False
    fused_gate_up: bool = False
    qk_norm: bool = False
    norm_offset: float = 0.0
    embed_scale: bool = False
    sandwich_norms: bool = False
    rope_per_layer_type: bool = False
    # whether HF's modelling code applies the config's attn_logit_softcapping (Gemma 3's keeps the key, unused)
    applies_attention_softcap: bool = True


FAMILIES = (
    Family("Llama 2/3", ("llama",)),
    Family("Mistral", ("mistral",)),
    Family("Qwen2", ("qwen2",)),
    Family("Qwen3", ("qwen3",), qk_norm=True),
    Family("Phi-3", ("phi3",), fused_qkv=True, fused_gate_up=True),
    Family("Gemma 3 (text)", ("gemma3_text",), qk_norm=True, norm_offset=1.0, embed_scale=True,
           sandwich_norms=True, rope_per_layer_type=True, applies_attention_softcap=False),
)
BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}

# RoPE variants whose cos/sin tables depend only on the position (so one table, computed once by HF's own rotary
# module, serves every call); "longrope" and "dynamic" also switch on the sequence length (see rope_problem).
STATIC_ROPE = ("default", "linear", "llama3", "yarn")
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}

# The backends that rebuild the network, and what each of them builds beyond the family fields (see graph_problem).
GRAPH_BACKENDS = ("onnxruntime", "trt-onnx-parsed", "trt-handbuilt")


def family_of(config) -> Family | None:
    return BY_MODEL_TYPE.get(config.model_type)


def rope_parameters(config, layer_type: str | None = None) -> dict:
    """The RoPE parameters (transformers 5: ``rope_parameters``, per layer type for Gemma 3; older: rope_scaling)."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if layer_type is not None and isinstance(rope.get(layer_type), dict):
        return rope[layer_type]
    if rope and all(isinstance(v, dict) for v in rope.values()):  # per layer type: every one is checked
        return {}
    return rope


def rope_types(config) -> list[str]:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    per_type = [v for v in rope.values() if isinstance(v, dict)] or [rope]
    return [p.get("rope_type", p.get("type", "default")) for p in per_type]


def rope_problem(config, max_seq: int) -> str | None:
    for rope_type in rope_types(config):
        if rope_type in STATIC_ROPE:
            continue
        params = next(p for p in ([rope_parameters(config)] + [rope_parameters(config, t) for t in
                                                                 layer_types(config)]) if p)
        original = params.get("original_max_position_embeddings") or getattr(
            config, "original_max_position_embeddings", None) or getattr(config, "max_position_embeddings", 0)
        if rope_type in ("longrope", "dynamic") and max_seq <= original:
            continue  # below the switch point HF applies the short (unscaled) factors at every length
        return (f"RoPE type '{rope_type}' changes its tables with the sequence length past {original} tokens "
                f"(this run's cache holds {max_seq})")
    return None


def layer_types(config) -> list[str]:
    return list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)


def sliding_window(config, layer: int) -> int | None:
    """The layer's attention window (keys within ``window`` positions of the query), or None (full attention)."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    types = getattr(config, "layer_types", None)
    if types is not None:
        return window if types[layer] == "sliding_attention" else None
    if config.model_type in ("qwen2", "qwen3"):  # their window is switched on by use_sliding_window
        if not getattr(config, "use_sliding_window", False):
            return None
        return window if layer >= getattr(config, "max_window_layers", 0) else None
    return window


def short_windows(config, max_seq: int) -> list[int]:
    """The layers whose window is shorter than the cache (a window at least as long never masks anything)."""
    return [i for i in range(config.num_hidden_layers) if (w := sliding_window(config, i)) and w < max_seq]


def softcaps(config) -> dict[str, float]:
    """The logit soft-capping the model's HF code applies (the config may name one its code ignores)."""
    family = family_of(config)
    applied = family is None or family.applies_attention_softcap
    caps = {"attention logit soft-capping": getattr(config, "attn_logit_softcapping", None) if applied else None,
            "final logit soft-capping": getattr(config, "final_logit_softcapping", None)}
    return {k: float(v) for k, v in caps.items() if v}


def activation(config) -> str | None:
    name = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
    return ACTIVATIONS.get(name)


def plain_attention_problem(config, max_seq: int) -> str | None:
    """Why the model's attention is not plain causal softmax over the whole cache (FlashAttention kernels compute
    only that), or None."""
    if cap := softcaps(config).get("attention logit soft-capping"):
        return f"attention logit soft-capping ({cap:g})"
    if windows := short_windows(config, max_seq):
        return (f"a sliding window of {sliding_window(config, windows[0])} tokens, shorter than the cache "
                f"({max_seq}), in {len(windows)} of {config.num_hidden_layers} layers")
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional attention"
    return None


def graph_problem(config, max_seq: int, backend: str) -> str | None:
    """Why ``backend`` (one of GRAPH_BACKENDS) cannot rebuild this model, in one phrase, or None."""
    family = family_of(config)
    if family is None:
        known = ", ".join(t for f in FAMILIES for t in f.model_types)
        return f"model type '{config.model_type}' has no family description (described: {known})"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models are not decoders only"
    if activation(config) is None:
        return f"the MLP activation '{getattr(config, 'hidden_act', None)}' is not rebuilt (silu, gelu_tanh are)"
    if problem := rope_problem(config, max_seq):
        return problem
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional attention"
    if backend == "trt-handbuilt":
        rope = [rope_parameters(config)] + [rope_parameters(config, t) for t in layer_types(config)]
        if any(float(p.get("partial_rotary_factor", 1.0)) != 1.0 for p in rope if p):
            return "partial rotary embeddings (RoPE on part of each head)"
    return None


TABLE_CACHE = 2048  # the cache length the docs table is evaluated at


def support_row(config) -> list[str]:
    """One row of the docs table: what each backend does with ``config`` at a cache of TABLE_CACHE slots, from the
    same checks the backends run (plus the window under which a windowed family stays supported)."""
    windows = sorted({w for i in range(config.num_hidden_layers) if (w := sliding_window(config, i))})
    within = f" (cache <= {windows[0]}: the sliding window)" if windows else ""
    flash = plain_attention_problem(config, TABLE_CACHE)
    cells = ["yes", f"refused: {flash}" if flash else "yes" + within]
    for backend in ("onnxruntime", "trt-handbuilt"):
        problem = graph_problem(config, TABLE_CACHE, backend)
        cells.append(f"refused: {problem.split(' (')[0]}" if problem else "yes")
    return cells


def support_table() -> str:
    """The Markdown table of docs/models.md: each described family (transformers' default configuration of its
    model type) and one type without a description, by backend."""
    from transformers import AutoConfig

    header = ["family", "model_type", "hf-flashattn-staticcache (sdpa or eager)", "its FlashAttention choices",
              "onnxruntime, trt-onnx-parsed (ONNX export)", "trt-handbuilt"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [(f.name, t) for f in FAMILIES for t in f.model_types] + [("any other decoder-only LM", "gemma2")]
    for name, model_type in rows:
        lines.append(f"| {name} | {model_type} | " + " | ".join(support_row(AutoConfig.for_model(model_type))) + " |")
    return "\n".join(lines) + "\n"


def rope_tables(hf_model, max_seq: int) -> dict:
    """HF's own cos/sin at every cache slot, per layer type: {type: (cos, sin)}, each [L, rotary dim] in the model
    dtype. The graphs gather them by position instead of rebuilding the rotary module (whose scaled variants branch
    on the sequence length); so every RoPE variant the module computes is exact, llama3, yarn and Gemma's
    per-layer-type bases included."""
    import torch

    body = hf_model.model
    dtype = next(hf_model.parameters()).dtype
    probe = torch.zeros(1, max_seq, 1, dtype=dtype)
    positions = torch.arange(max_seq).view(1, -1)
    per_type = family_of(hf_model.config).rope_per_layer_type
    tables = {}
    with torch.no_grad():
        for kind in dict.fromkeys(layer_types(hf_model.config)):
            cos, sin = body.rotary_emb(probe, positions, kind) if per_type else body.rotary_emb(probe, positions)
            tables[kind] = (cos[0].contiguous(), sin[0].contiguous())
    return tables


if __name__ == "__main__":  # python -m harness.model.families > the table of docs/models.md
    print(support_table(), end="")
