"""The Llama-family decoder as a TensorRT network, layer by layer, with weights taken from the HF state dict.

Graph I/O (B and S dynamic through the optimization profiles; L = max_seq fixed):
    input_ids [B, S] int64, position_ids [B, S] int64, cache_position [S] int64 (slots written),
    write_index [B] int32 (first slot written, per row), attention_mask [B, L] int64 (1 = a real token),
    past_key_i / past_value_i [B, Hkv, L, D]  ->  logits [B, V] (last position), present_key_i / present_value_i.
The caches are updated in place by the KV-cache-update layer: present_* must be bound to the past_* addresses.

Every step mirrors HF's modelling code: RMSNorm in float32 then cast and scale; q/k/v/o projections as matrix
multiplies against [1, out, in] weight constants (TRANSPOSE), biases when the config has them (Qwen2); RoPE with
HF's own cos/sin tables (computed by the model's rotary module, so llama3 scaling is exact), gathered by position
and applied as q*cos + rotate_half(q)*sin, rotate_half being a constant signed permutation matrix; grouped-query
attention by folding the group into the query axis; a causal mask over the whole static cache (slot <= the query's
slot, and not padding); softmax in float32 — or, with ``attention="fused"``, TensorRT's attention layer
(``add_attention_v2``: pre-scaled Q, native GQA, the same mask as a bool input); SwiGLU MLP; final norm; lm_head
(tied or not).
Weights are named after their HF parameters (``model.layers.0.self_attn.q_proj.weight``), so an engine built with
the refit flag can be refitted by name; host arrays are returned to the caller to keep alive through the build.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.sdk import (
    QuantScheme,
    UserError,
    activation,
    family_of,
    graph_problem,
    layer_types,
    quantize_weight,
    rope_tables,
    sliding_window,
    softcaps,
)
from harness.sdk import head_dim as model_head_dim


@dataclass
class NetworkOptions:
    dtype: torch.dtype = torch.float16
    max_seq: int = 2048
    fuse_qkv: bool = True  # one [q;k;v] matmul instead of three
    attention: str = "explicit"  # explicit: matmul-softmax-matmul | fused: TensorRT's attention layer (IAttention)
    # weight-only: decoder linears as int8/fp8 constants + dequantize layers
    quant: QuantScheme = field(default_factory=QuantScheme)


from backends.trt_handbuilt.options import ATTENTIONS  # noqa: E402 - one list of the attention forms


class _Builder:
    def __init__(self, trt, network, dtype: torch.dtype, quant: QuantScheme = QuantScheme()):
        self.trt, self.net, self.dtype, self.quant = trt, network, dtype, quant
        self.trt_dtype = {torch.float32: trt.float32, torch.float16: trt.float16,
                          torch.bfloat16: trt.bfloat16}[dtype]
        self.keep: list = []  # host memory behind every trt.Weights, alive until the build returns

    def const(self, array: torch.Tensor, name: str):
        """A named constant. bf16 goes in as raw 16-bit words (numpy has no bfloat16)."""
        t = array.detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            host = t.view(torch.int16).numpy()
            weights = self.trt.Weights(self.trt.bfloat16, host.ctypes.data, host.size)
        elif t.dtype in (torch.int64, torch.int8):
            host = t.numpy()
            weights = self.trt.Weights(host)
        else:
            host = t.numpy()
            weights = self.trt.Weights(host)
        self.keep.append(host)
        layer = self.net.add_constant(tuple(t.shape), weights)
        layer.name = name
        self.net.set_weights_name(weights, name)  # refit by HF parameter name
        return layer.get_output(0)

    def named(self, layer, name: str):
        layer.name = name
        return layer.get_output(0)

    def ew(self, a, b, op, name):
        return self.named(self.net.add_elementwise(a, b, op), name)

    def unary(self, a, op, name):
        return self.named(self.net.add_unary(a, op), name)

    def cast(self, a, to, name):
        return self.named(self.net.add_cast(a, to), name)

    def shuffle(self, a, name, reshape=None, first=None, second=None):
        layer = self.net.add_shuffle(a)
        if first is not None:
            layer.first_transpose = first
        if reshape is not None:
            layer.reshape_dims = reshape
        if second is not None:
            layer.second_transpose = second
        return self.named(layer, name)

    def matmul(self, a, b, name, transpose_b=False):
        op = self.trt.MatrixOperation
        return self.named(self.net.add_matrix_multiply(a, op.NONE, b, op.TRANSPOSE if transpose_b else op.NONE),
                          name)

    def linear(self, x, weight: torch.Tensor, bias: torch.Tensor | None, name: str, quantize: bool = False):
        if quantize and self.quant.enabled:
            w = self.dequantized_weight(weight, name)
        else:
            w = self.const(weight.to(self.dtype).unsqueeze(0), f"{name}.weight")  # [1, out, in]
        y = self.matmul(x, w, f"{name}.matmul", transpose_b=True)
        if bias is not None:
            b = self.const(bias.to(self.dtype).view(1, 1, -1), f"{name}.bias")
            y = self.ew(y, b, self.trt.ElementWiseOperation.SUM, f"{name}.add_bias")
        return y

    def dequantized_weight(self, weight: torch.Tensor, name: str):
        """Weight-only quantization as TensorRT spells it: the codes as an int8 (fp8) constant [1, out, in] and a
        dequantize layer with the scales of harness/model/quant.py in the model dtype: per output channel (1-D scales
        on axis 1) or per block of ``group_size`` input columns (scales [1, out, in / g]: TensorRT infers the
        block shape from the ranks). TensorRT folds the dequantization into the GEMM's weight load."""
        codes, scale, _ = quantize_weight(weight, self.quant)
        if codes.dtype == torch.float8_e4m3fn:
            # fp8 codes enter as exact float32 values through a quantize layer of scale 1 (folded at build time):
            # TensorRT wants fp8 tensors to come from a quantize layer, and its Python API cannot read fp8
            # constants back for the reference evaluator
            exact = self.const(codes.float().unsqueeze(0), f"{name}.weight_codes")
            one = self.const(torch.tensor(1.0), f"{name}.weight_unit_scale")
            q = self.named(self.net.add_quantize(exact, one, self.trt.fp8), f"{name}.quantize")
        else:
            q = self.const(codes.unsqueeze(0), f"{name}.weight_codes")
        if self.quant.group_size:
            s = self.const(scale.to(self.dtype).unsqueeze(0), f"{name}.weight_scales")  # [1, out, in / g]
            axis = 2
        else:
            s = self.const(scale.to(self.dtype).reshape(-1), f"{name}.weight_scales")  # [out]
            axis = 1
        dq = self.net.add_dequantize(q, s, self.trt_dtype)
        dq.axis = axis
        return self.named(dq, f"{name}.dequantize")

    def rms_norm(self, x, weight: torch.Tensor, eps: float, name: str, offset: float = 0.0, rank: int = 3):
        """RMSNorm over the last axis of a rank-``rank`` tensor. Llama: cast, then times w in the model dtype;
        with an ``offset`` (Gemma: 1 + w) the scale is applied in float32 before the cast, as HF does."""
        trt, E = self.trt, self.trt.ElementWiseOperation
        x32 = self.cast(x, trt.float32, f"{name}.to_fp32")
        sq = self.ew(x32, x32, E.PROD, f"{name}.square")
        mean = self.named(self.net.add_reduce(sq, trt.ReduceOperation.AVG, 1 << (rank - 1), True), f"{name}.mean")
        ones = (1,) * rank
        eps_c = self.const(torch.tensor(eps, dtype=torch.float32).view(ones), f"{name}.eps")
        rstd = self.unary(self.unary(self.ew(mean, eps_c, E.SUM, f"{name}.add_eps"), trt.UnaryOperation.SQRT,
                                     f"{name}.sqrt"), trt.UnaryOperation.RECIP, f"{name}.rsqrt")
        normed = self.ew(x32, rstd, E.PROD, f"{name}.scale")
        shape = (*ones[:-1], -1)
        if offset:
            w = self.const((weight.float() + offset).view(shape), f"{name}.weight")  # derived: offset + w
            return self.cast(self.ew(normed, w, E.PROD, f"{name}.mul_weight"), self.trt_dtype, f"{name}.to_dtype")
        normed = self.cast(normed, self.trt_dtype, f"{name}.to_dtype")
        w = self.const(weight.to(self.dtype).view(shape), f"{name}.weight")
        return self.ew(normed, w, E.PROD, f"{name}.mul_weight")

    def softcap(self, x, cap: float, name: str):
        """cap * tanh(x / cap) (Gemma's logit soft-capping)."""
        E = self.trt.ElementWiseOperation
        c = self.const(torch.tensor(cap, dtype=torch.float32).view((1,) * len(x.shape)), f"{name}.cap")
        t = self.named(self.net.add_activation(self.ew(x, c, E.DIV, f"{name}.div"), self.trt.ActivationType.TANH),
                       f"{name}.tanh")
        return self.ew(t, c, E.PROD, f"{name}.mul")


def check_quant_scheme(quant: QuantScheme) -> None:
    """What the hand-built network quantizes: int8 and fp8 weights, symmetric (TensorRT's dequantize layer scales
    without a zero point), per output channel or per block."""
    if quant.scheme == "int4":
        raise UserError("trt-handbuilt builds int8 and fp8 weights (int4 blocks are not wired in)",
                        "use quant=int8 or quant=fp8 with backend=trt-handbuilt")
    if quant.enabled and not quant.symmetric:
        raise UserError("trt-handbuilt quantizes symmetrically (TensorRT's dequantize layer has no zero point)",
                        "add quant_options.symmetric=true")


def rotate_half_matrix(head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """R with x @ R == cat(-x[D/2:], x[:D/2]) (HF's rotate_half)."""
    half = head_dim // 2
    r = torch.zeros(head_dim, head_dim, dtype=torch.float32)
    for i in range(half):
        r[i + half, i] = -1.0  # out[i] = -x[i + half]
        r[i, i + half] = 1.0  # out[i + half] = x[i]
    return r.to(dtype)


def check_buildable(cfg, options: NetworkOptions) -> None:
    """Refuse, in one line with its remedy, what this network cannot build (before any layer is added)."""
    if problem := graph_problem(cfg, options.max_seq, "trt-handbuilt"):
        raise UserError(f"trt-handbuilt cannot build this model: {problem}",
                        "use backend=onnxruntime or backend=hf-flashattn-staticcache for it")
    if options.attention not in ATTENTIONS:
        raise UserError(f"unknown backend.attention '{options.attention}' for trt-handbuilt",
                        f"use one of {', '.join(ATTENTIONS)}")
    if options.attention == "fused" and "attention logit soft-capping" in softcaps(cfg):
        raise UserError("TensorRT's attention layer has no logit soft-capping", "use backend.attention=explicit")
    check_quant_scheme(options.quant)


def define_llama(trt, network, hf_model, options: NetworkOptions) -> list:
    """Fill ``network`` with the model, as its family describes it (harness/model/families.py); returns the host arrays
    to keep alive until the build returns."""
    check_buildable(hf_model.config, options)
    decoder = _DecoderNetwork(trt, network, hf_model, options)
    decoder.build()
    return decoder.b.keep


class _DecoderNetwork:
    """Writes one decoder-only model into a TensorRT network, one method per part, in graph order (layer order and
    names are what an engine's refit and the CPU evaluator see). Every difference between families is read from the
    model's :class:`Family` fields and config, never from the family's name."""

    def __init__(self, trt, network, hf_model, options: NetworkOptions):
        cfg = hf_model.config
        self.trt, self.net, self.hf_model, self.options = trt, network, hf_model, options
        self.family = family_of(cfg)
        self.b = _Builder(trt, network, options.dtype, options.quant)
        self.E, self.dt = trt.ElementWiseOperation, self.b.trt_dtype
        self.sd = {k: v.detach() for k, v in hf_model.state_dict().items()}  # converted to the dtype per constant
        self.layers, self.heads, self.kv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
        self.d = model_head_dim(cfg)
        self.groups, self.L = self.heads // self.kv, options.max_seq
        self.eps, self.offset = cfg.rms_norm_eps, self.family.norm_offset
        self.kinds = layer_types(cfg)
        self.windows = [w if (w := sliding_window(cfg, i)) and w < self.L else None for i in range(self.layers)]
        self.attn_cap = softcaps(cfg).get("attention logit soft-capping")
        self.final_cap = softcaps(cfg).get("final logit soft-capping")
        self.act = activation(cfg)

    def build(self) -> None:
        ids = self.graph_inputs()
        hidden = self.embedding(ids)
        # (rotate_half, the mask and the scale are derived constants; all other constants are HF parameters)
        self.rope = self.rope_by_position()
        self.rot = self.b.const(rotate_half_matrix(self.d, self.options.dtype).view(1, 1, self.d, self.d),
                                "rope.rotate_half")
        self.allowed, self.allowed_4d = self.attention_masks()
        self.neg = self.b.const(torch.tensor([[[[[torch.finfo(torch.float32).min]]]]]), "mask.neg")
        self.scale = self.b.const(torch.tensor([[[[self.hf_model.model.layers[0].self_attn.scaling]]]])
                                  .to(self.options.dtype), "attn.scale")
        for i in range(self.layers):
            hidden = self.decoder_layer(i, hidden)
        self.final_norm_and_logits(hidden)

    def graph_inputs(self):
        """The step's inputs (see the module docstring); returns input_ids, keeps the others for the layers."""
        trt, net = self.trt, self.net
        ids = net.add_input("input_ids", trt.int64, (-1, -1))
        self.pos = net.add_input("position_ids", trt.int64, (-1, -1))
        self.slots = net.add_input("cache_position", trt.int64, (-1,))
        self.write_index = net.add_input("write_index", trt.int32, (-1,))  # the cache-update layer wants int32
        self.key_mask = net.add_input("attention_mask", trt.int64, (-1, self.L))
        return ids

    def norm(self, x, name: str, rank: int = 3):
        """The RMSNorm whose weight is the HF parameter ``{name}.weight``, with the family's offset."""
        return self.b.rms_norm(x, self.sd[f"{name}.weight"], self.eps, name, self.offset, rank=rank)

    def embedding(self, ids):
        b = self.b
        emb_w = b.const(self.sd["model.embed_tokens.weight"].to(self.options.dtype), "model.embed_tokens.weight")
        hidden = b.named(self.net.add_gather(emb_w, ids, 0), "embed")  # [B, S, H]
        if self.family.embed_scale:  # HF multiplies by the scale rounded to the weights' dtype
            scale_c = self.hf_model.model.embed_tokens.embed_scale.to(self.options.dtype).view(1, 1, 1)
            hidden = b.ew(hidden, b.const(scale_c, "embed.scale"), self.E.PROD, "embed.scaled")
        return hidden

    def rope_by_position(self) -> dict:
        """Layer type -> (cos, sin) [B, 1, S, D]: HF's tables gathered at each token's position."""
        b, rope = self.b, {}
        for kind, (cos_t, sin_t) in rope_tables(self.hf_model, self.L).items():
            cos_t, sin_t = cos_t.to(self.options.dtype), sin_t.to(self.options.dtype)
            rope[kind] = tuple(b.shuffle(b.named(self.net.add_gather(b.const(t, f"rope.{kind}.{n}"), self.pos, 0),
                                                 f"rope.{kind}.{n}_gather"), f"rope.{kind}.{n}_bcast",
                                         reshape=(0, 1, -1, self.d)) for n, t in (("cos", cos_t), ("sin", sin_t)))
        return rope

    def attention_masks(self) -> tuple[dict, dict | None]:
        """Window (None: whole cache) -> the bool "may attend" mask [B, 1, 1, S, L], and for the fused attention the
        same masks as [B, 1, S, L]."""
        b, E, L = self.b, self.E, self.L
        # slot k visible to query q iff k <= q's slot and slot k holds a real token of the row
        slot_ids = b.const(torch.arange(L, dtype=torch.int64).view(1, 1, 1, 1, L), "mask.slots")
        q_slots = b.shuffle(self.slots, "mask.query_slots", reshape=(1, 1, 1, -1, 1))
        future = b.ew(slot_ids, q_slots, E.GREATER, "mask.future")
        causal = b.unary(future, self.trt.UnaryOperation.NOT, "mask.causal")
        zero = b.const(torch.zeros(1, 1, dtype=torch.int64), "mask.zero")
        real = b.shuffle(b.ew(self.key_mask, zero, E.GREATER, "mask.real"), "mask.real_bcast",
                         reshape=(0, 1, 1, 1, L))
        # A left-padding query would see no key at all; what a fused attention kernel returns for a fully masked row
        # is not specified (softmax over nothing), and a NaN there would reach the cache and, through 0 * NaN, the
        # real tokens. So every query also sees its own slot: harmless for real tokens, whose own slot is real.
        own = b.ew(slot_ids, q_slots, E.EQUAL, "mask.own_slot")
        allowed = {None: b.ew(causal, b.ew(real, own, E.OR, "mask.real_or_own"), E.AND, "mask.allowed")}
        for w in set(self.windows) - {None}:  # HF: a key within w - 1 slots before the query's
            start = b.ew(q_slots, b.const(torch.tensor(w, dtype=torch.int64).view(1, 1, 1, 1, 1), f"mask.window_{w}"),
                         E.SUB, f"mask.window_{w}_start")
            inside = b.ew(slot_ids, start, E.GREATER, f"mask.window_{w}_inside")
            allowed[w] = b.ew(allowed[None], inside, E.AND, f"mask.allowed_window_{w}")
        if self.options.attention != "fused":
            return allowed, None
        return allowed, {w: b.shuffle(m, f"mask.allowed_4d_{w}", reshape=(0, 1, -1, L)) for w, m in allowed.items()}

    def decoder_layer(self, i: int, hidden):
        """Attention and MLP, each added back to the residual stream. With the family's sandwich norms, the
        attention and MLP outputs are normed too and the MLP's input has its own norm (pre_feedforward_layernorm);
        otherwise post_attention_layernorm is the MLP's input norm."""
        p, E = f"model.layers.{i}", self.E
        attn_out = self.attention(i, self.norm(hidden, f"{p}.input_layernorm"))
        if self.family.sandwich_norms:
            attn_out = self.norm(attn_out, f"{p}.post_attention_layernorm")
        hidden = self.b.ew(hidden, attn_out, E.SUM, f"{p}.attn_residual")
        mlp_in = self.norm(hidden, f"{p}.pre_feedforward_layernorm" if self.family.sandwich_norms
                           else f"{p}.post_attention_layernorm")
        down = self.mlp(p, mlp_in)
        if self.family.sandwich_norms:
            down = self.norm(down, f"{p}.post_feedforward_layernorm")
        return self.b.ew(hidden, down, E.SUM, f"{p}.mlp_residual")

    def attention(self, i: int, x):
        """q/k/v projections, q-k norm (if the family has it), RoPE, the cache update, attention, o_proj."""
        p = f"model.layers.{i}"
        q, k, v = self.qkv_heads(p, x)
        if self.family.qk_norm:  # per head, over D (before RoPE)
            q = self.norm(q, f"{p}.self_attn.q_norm", rank=4)
            k = self.norm(k, f"{p}.self_attn.k_norm", rank=4)
        cos, sin = self.rope[self.kinds[i]]
        q, k = self.rotary(p, q, "q", cos, sin), self.rotary(p, k, "k", cos, sin)
        k_all, v_all = self.cache_update(i, k, v)
        if self.options.attention == "fused":
            ctx = self.fused_attention(p, q, k_all, v_all, self.windows[i])
        else:
            ctx = self.explicit_attention(p, q, k_all, v_all, self.windows[i])
        return self.b.linear(ctx, self.sd[f"{p}.self_attn.o_proj.weight"], self.sd.get(f"{p}.self_attn.o_proj.bias"),
                             f"{p}.self_attn.o_proj", quantize=True)

    def qkv_weights(self, p: str) -> tuple[list, list]:
        """The q, k, v weights and biases (None without), split from the family's fused [q; k; v] if it has one."""
        names = ("q_proj", "k_proj", "v_proj")
        if self.family.fused_qkv:  # [q; k; v] rows of one weight
            sizes = [self.heads * self.d, self.kv * self.d, self.kv * self.d]
            weights = list(self.sd[f"{p}.self_attn.qkv_proj.weight"].split(sizes))
            fused_bias = self.sd.get(f"{p}.self_attn.qkv_proj.bias")
            return weights, list(fused_bias.split(sizes)) if fused_bias is not None else [None] * 3
        return [self.sd[f"{p}.self_attn.{n}.weight"] for n in names], [self.sd.get(f"{p}.self_attn.{n}.bias")
                                                                        for n in names]

    def qkv_heads(self, p: str, x):
        """q [B, H, S, D], k and v [B, Hkv, S, D]: one fused matmul (``fuse_qkv``) or three."""
        b, heads, kv, d = self.b, self.heads, self.kv, self.d
        weights, bias = self.qkv_weights(p)
        if self.options.fuse_qkv:
            fb = torch.cat(bias) if bias[0] is not None else None
            # rows keep their scales  # [B, S, (H + 2 Hkv) D]
            qkv = b.linear(x, torch.cat(weights), fb, f"{p}.self_attn.qkv_proj", quantize=True)
            q, k, v = self.split_qkv(p, qkv)
        else:
            q, k, v = (b.linear(x, weights[j], bias[j], f"{p}.self_attn.{n}", quantize=True)
                       for j, n in enumerate(("q_proj", "k_proj", "v_proj")))
        q = b.shuffle(q, f"{p}.q_heads", reshape=(0, 0, heads, d), second=(0, 2, 1, 3))  # [B, H, S, D]
        k = b.shuffle(k, f"{p}.k_heads", reshape=(0, 0, kv, d), second=(0, 2, 1, 3))  # [B, Hkv, S, D]
        v = b.shuffle(v, f"{p}.v_heads", reshape=(0, 0, kv, d), second=(0, 2, 1, 3))
        return q, k, v

    def split_qkv(self, p: str, qkv) -> list:
        """[B, S, (H + 2 Hkv) D] -> q, k, v as slices whose B and S are read from the tensor's shape."""
        b, E, heads, kv, d = self.b, self.E, self.heads, self.kv, self.d
        parts = []
        shape = b.named(self.net.add_shape(qkv), f"{p}.qkv_shape")  # [B, S, (H + 2 Hkv) D]
        keep_bs = b.const(torch.tensor([1, 1, 0], dtype=torch.int64), f"{p}.qkv_keep_bs")
        bs = b.ew(shape, keep_bs, E.PROD, f"{p}.qkv_bs")  # [B, S, 0]
        spans = ((0, heads * d), (heads * d, kv * d), ((heads + kv) * d, kv * d))
        for name, (start, size) in zip(("q_proj", "k_proj", "v_proj"), spans):
            sl = self.net.add_slice(qkv, (0, 0, start), (1, 1, size), (1, 1, 1))
            width = b.const(torch.tensor([0, 0, size], dtype=torch.int64), f"{p}.{name}_width")
            sl.set_input(2, b.ew(bs, width, E.SUM, f"{p}.{name}_size"))  # dynamic [B, S, size]
            parts.append(b.named(sl, f"{p}.self_attn.{name}"))
        return parts

    def rotary(self, p: str, x, tag: str, cos, sin):
        """x * cos + rotate_half(x) * sin."""
        b, E = self.b, self.E
        rotated = b.matmul(x, self.rot, f"{p}.{tag}_rotate_half")
        return b.ew(b.ew(x, cos, E.PROD, f"{p}.{tag}_cos"), b.ew(rotated, sin, E.PROD, f"{p}.{tag}_sin"),
                    E.SUM, f"{p}.{tag}_rope")

    def cache_update(self, i: int, k, v) -> list:
        """Write k and v into layer i's caches in place; returns the whole caches (graph outputs present_*)."""
        caches = []
        for kind, new in (("key", k), ("value", v)):
            past = self.net.add_input(f"past_{kind}_{i}", self.dt, (-1, self.kv, self.L, self.d))
            upd = self.net.add_kv_cache_update(past, new, self.write_index, self.trt.KVCacheMode.LINEAR)
            upd.name = f"model.layers.{i}.{kind}_cache_update"
            present = upd.get_output(0)
            present.name = f"present_{kind}_{i}"
            self.net.mark_output(present)
            caches.append(present)
        return caches

    def fused_attention(self, p: str, q, k_all, v_all, window):
        """TensorRT's attention layer -> [B, S, H*D]."""
        trt, b = self.trt, self.b
        # IAttention wants Q pre-scaled; GQA is native (N_q % N_kv == 0); the bool mask says "may attend".
        # decomposable: TensorRT may fall back to separate kernels where no fused kernel fits.
        qs = b.ew(q, self.scale, self.E.PROD, f"{p}.q_scaled")
        att = self.net.add_attention_v2(qs, k_all, v_all, trt.AttentionNormalizationOp.SOFTMAX,
                                        trt.CausalMaskKind.NONE)
        att.mask, att.decomposable, att.name = self.allowed_4d[window], True, f"{p}.attention"
        return b.shuffle(att.get_output(0), f"{p}.ctx_merge", first=(0, 2, 1, 3),
                         reshape=(0, 0, self.heads * self.d))  # [B, H, S, D] -> [B, S, H*D]

    def explicit_attention(self, p: str, q, k_all, v_all, window):
        """Matmul, soft-capping (if any), mask, softmax in float32, matmul -> [B, S, H*D]; grouped-query attention
        by folding the group into the query axis."""
        trt, b, E, heads, kv, d, L = self.trt, self.b, self.E, self.heads, self.kv, self.d, self.L
        qg = b.shuffle(q, f"{p}.q_groups", reshape=(0, kv, -1, d))  # [B, Hkv, G*S, D]
        scores = b.ew(b.matmul(qg, k_all, f"{p}.qk", transpose_b=True), self.scale, E.PROD, f"{p}.qk_scaled")
        scores = b.cast(scores, trt.float32, f"{p}.scores_fp32")
        if self.attn_cap:
            scores = b.softcap(scores, self.attn_cap, f"{p}.attn_softcap")
        scores = b.shuffle(scores, f"{p}.scores_5d", reshape=(0, 0, self.groups, -1, L))  # [B, Hkv, G, S, L]
        masked = b.named(self.net.add_select(self.allowed[window], scores, self.neg), f"{p}.masked")
        sm = self.net.add_softmax(masked)
        sm.axes = 1 << 4
        probs = b.shuffle(b.cast(b.named(sm, f"{p}.softmax"), self.dt, f"{p}.probs_dtype"), f"{p}.probs_4d",
                          reshape=(0, 0, -1, L))
        ctx = b.matmul(probs, v_all, f"{p}.pv")  # [B, Hkv, G*S, D]
        ctx = b.shuffle(ctx, f"{p}.ctx_heads", reshape=(0, heads, -1, d), second=(0, 2, 1, 3))
        return b.shuffle(ctx, f"{p}.ctx_merge", reshape=(0, 0, heads * d))

    def mlp(self, p: str, x):
        """Gated MLP: down(act(gate(x)) * up(x)), gate and up split from the family's fused weight if it has one."""
        b, sd = self.b, self.sd
        if self.family.fused_gate_up:  # [gate; up] rows of one weight
            gate_w, up_w = sd[f"{p}.mlp.gate_up_proj.weight"].chunk(2)
        else:
            gate_w, up_w = sd[f"{p}.mlp.gate_proj.weight"], sd[f"{p}.mlp.up_proj.weight"]
        gate = b.linear(x, gate_w, None, f"{p}.mlp.gate_proj", quantize=True)
        up = b.linear(x, up_w, None, f"{p}.mlp.up_proj", quantize=True)
        act = self.trt.ActivationType
        if self.act == "gelu_tanh":
            gated = b.named(self.net.add_activation(gate, act.GELU_TANH), f"{p}.mlp.gelu_tanh")
        else:
            gated = b.ew(gate, b.named(self.net.add_activation(gate, act.SIGMOID), f"{p}.mlp.sigmoid"),
                         self.E.PROD, f"{p}.mlp.silu")
        return b.linear(b.ew(gated, up, self.E.PROD, f"{p}.mlp.gate_up"), sd[f"{p}.mlp.down_proj.weight"], None,
                        f"{p}.mlp.down_proj", quantize=True)

    def final_norm_and_logits(self, hidden) -> None:
        """The last position's hidden state, normed, through lm_head (tied or not), soft-capped if the model caps:
        the graph output ``logits`` [B, V]."""
        b, E, trt, sd = self.b, self.E, self.trt, self.sd
        # last position: gather index S-1 along the sequence axis, S read from the tensor's shape
        shape = b.named(self.net.add_shape(hidden), "last.shape")
        seq = b.named(self.net.add_gather(shape, b.const(torch.tensor([1], dtype=torch.int64), "last.axis1"), 0),
                      "last.seq_len")
        last_idx = b.ew(seq, b.const(torch.tensor([1], dtype=torch.int64), "last.one"), E.SUB, "last.index")
        last = b.named(self.net.add_gather(hidden, last_idx, 1), "last.hidden")  # [B, 1, H]
        last = self.norm(last, "model.norm")
        head_w = sd["lm_head.weight"] if "lm_head.weight" in sd else sd["model.embed_tokens.weight"]
        logits = b.shuffle(b.linear(last, head_w, None, "lm_head"), "logits_2d", reshape=(0, -1))  # [B, V]
        if self.final_cap:
            logits = b.softcap(b.cast(logits, trt.float32, "logits_fp32"), self.final_cap, "final_softcap")
            logits = b.cast(logits, self.dt, "logits_dtype")
        logits.name = "logits"
        self.net.mark_output(logits)
