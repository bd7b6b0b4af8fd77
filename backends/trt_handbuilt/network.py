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

from harness.sdk import QuantScheme, UserError, family_of, graph_problem, quantize_weight, rope_tables
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


def define_llama(trt, network, hf_model, options: NetworkOptions) -> list:
    """Fill ``network`` with the model, as its family describes it (harness/model/families.py); returns the host arrays
    to keep alive until the build returns."""
    from harness.sdk import activation, layer_types, sliding_window, softcaps

    cfg = hf_model.config
    if problem := graph_problem(cfg, options.max_seq, "trt-handbuilt"):
        raise UserError(f"trt-handbuilt cannot build this model: {problem}",
                        "use backend=onnxruntime or backend=hf-flashattn-staticcache for it")
    if options.attention not in ATTENTIONS:
        raise UserError(f"unknown backend.attention '{options.attention}' for trt-handbuilt",
                        f"use one of {', '.join(ATTENTIONS)}")
    if options.attention == "fused" and "attention logit soft-capping" in softcaps(cfg):
        raise UserError("TensorRT's attention layer has no logit soft-capping", "use backend.attention=explicit")
    check_quant_scheme(options.quant)
    family = family_of(cfg)
    b = _Builder(trt, network, options.dtype, options.quant)
    E, dt = trt.ElementWiseOperation, b.trt_dtype
    sd = {k: v.detach() for k, v in hf_model.state_dict().items()}  # converted to the target dtype per constant
    layers, heads, kv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    d = model_head_dim(cfg)
    groups, L = heads // kv, options.max_seq
    eps, offset = cfg.rms_norm_eps, family.norm_offset
    kinds = layer_types(cfg)
    windows = [w if (w := sliding_window(cfg, i)) and w < L else None for i in range(layers)]
    ids = network.add_input("input_ids", trt.int64, (-1, -1))
    pos = network.add_input("position_ids", trt.int64, (-1, -1))
    slots = network.add_input("cache_position", trt.int64, (-1,))
    write_index = network.add_input("write_index", trt.int32, (-1,))  # the cache-update layer wants int32
    key_mask = network.add_input("attention_mask", trt.int64, (-1, L))

    emb_w = b.const(sd["model.embed_tokens.weight"].to(options.dtype), "model.embed_tokens.weight")
    # (rotate_half, the mask and the scale are derived constants; all other constants are HF parameters)
    hidden = b.named(network.add_gather(emb_w, ids, 0), "embed")  # [B, S, H]
    if family.embed_scale:  # HF multiplies by the scale rounded to the weights' dtype
        scale_c = hf_model.model.embed_tokens.embed_scale.to(options.dtype).view(1, 1, 1)
        hidden = b.ew(hidden, b.const(scale_c, "embed.scale"), E.PROD, "embed.scaled")
    rope = {}
    for kind, (cos_t, sin_t) in rope_tables(hf_model, L).items():
        cos_t, sin_t = cos_t.to(options.dtype), sin_t.to(options.dtype)
        rope[kind] = tuple(b.shuffle(b.named(network.add_gather(b.const(t, f"rope.{kind}.{n}"), pos, 0),
                                             f"rope.{kind}.{n}_gather"), f"rope.{kind}.{n}_bcast",
                                     reshape=(0, 1, -1, d)) for n, t in (("cos", cos_t), ("sin", sin_t)))
    rot = b.const(rotate_half_matrix(d, options.dtype).view(1, 1, d, d), "rope.rotate_half")
    # mask [B, 1, 1, S, L]: slot k visible to query q iff k <= q's slot and slot k holds a real token of the row
    slot_ids = b.const(torch.arange(L, dtype=torch.int64).view(1, 1, 1, 1, L), "mask.slots")
    q_slots = b.shuffle(slots, "mask.query_slots", reshape=(1, 1, 1, -1, 1))
    future = b.ew(slot_ids, q_slots, E.GREATER, "mask.future")
    causal = b.unary(future, trt.UnaryOperation.NOT, "mask.causal")
    zero = b.const(torch.zeros(1, 1, dtype=torch.int64), "mask.zero")
    real = b.shuffle(b.ew(key_mask, zero, E.GREATER, "mask.real"), "mask.real_bcast", reshape=(0, 1, 1, 1, L))
    # A left-padding query would see no key at all; what a fused attention kernel returns for a fully masked row
    # is not specified (softmax over nothing), and a NaN there would reach the cache and, through 0 * NaN, the
    # real tokens. So every query also sees its own slot: harmless for real tokens, whose own slot is real.
    own = b.ew(slot_ids, q_slots, E.EQUAL, "mask.own_slot")
    allowed = {None: b.ew(causal, b.ew(real, own, E.OR, "mask.real_or_own"), E.AND, "mask.allowed")}
    for w in set(windows) - {None}:  # HF: a key within w - 1 slots before the query's
        start = b.ew(q_slots, b.const(torch.tensor(w, dtype=torch.int64).view(1, 1, 1, 1, 1), f"mask.window_{w}"),
                     E.SUB, f"mask.window_{w}_start")
        inside = b.ew(slot_ids, start, E.GREATER, f"mask.window_{w}_inside")
        allowed[w] = b.ew(allowed[None], inside, E.AND, f"mask.allowed_window_{w}")
    allowed_4d = {w: b.shuffle(m, f"mask.allowed_4d_{w}", reshape=(0, 1, -1, L)) for w, m in allowed.items()} \
        if options.attention == "fused" else None  # [B, 1, S, L]: the attention layer's mask
    neg = b.const(torch.tensor([[[[[torch.finfo(torch.float32).min]]]]]), "mask.neg")
    scale = b.const(torch.tensor([[[[hf_model.model.layers[0].self_attn.scaling]]]]).to(options.dtype),
                    "attn.scale")
    attn_cap = softcaps(cfg).get("attention logit soft-capping")
    act = activation(cfg)

    for i in range(layers):
        p = f"model.layers.{i}"
        attn_in = b.rms_norm(hidden, sd[f"{p}.input_layernorm.weight"], eps, f"{p}.input_layernorm", offset)
        names = ("q_proj", "k_proj", "v_proj")
        if family.fused_qkv:  # [q; k; v] rows of one weight
            sizes = [heads * d, kv * d, kv * d]
            weights = list(sd[f"{p}.self_attn.qkv_proj.weight"].split(sizes))
            fused_bias = sd.get(f"{p}.self_attn.qkv_proj.bias")
            bias = list(fused_bias.split(sizes)) if fused_bias is not None else [None] * 3
        else:
            weights = [sd[f"{p}.self_attn.{n}.weight"] for n in names]
            bias = [sd.get(f"{p}.self_attn.{n}.bias") for n in names]
        if options.fuse_qkv:
            w = torch.cat(weights)
            fb = torch.cat(bias) if bias[0] is not None else None
            # rows keep their scales  # [B, S, (H + 2 Hkv) D]
            qkv = b.linear(attn_in, w, fb, f"{p}.self_attn.qkv_proj", quantize=True)
            parts = []
            shape = b.named(network.add_shape(qkv), f"{p}.qkv_shape")  # [B, S, (H + 2 Hkv) D]
            keep_bs = b.const(torch.tensor([1, 1, 0], dtype=torch.int64), f"{p}.qkv_keep_bs")
            bs = b.ew(shape, keep_bs, E.PROD, f"{p}.qkv_bs")  # [B, S, 0]
            for j, (start, size) in enumerate(((0, heads * d), (heads * d, kv * d), ((heads + kv) * d, kv * d))):
                sl = network.add_slice(qkv, (0, 0, start), (1, 1, size), (1, 1, 1))
                width = b.const(torch.tensor([0, 0, size], dtype=torch.int64), f"{p}.{names[j]}_width")
                sl.set_input(2, b.ew(bs, width, E.SUM, f"{p}.{names[j]}_size"))  # dynamic [B, S, size]
                parts.append(b.named(sl, f"{p}.self_attn.{names[j]}"))
            q, k, v = parts
        else:
            q, k, v = (b.linear(attn_in, weights[j], bias[j], f"{p}.self_attn.{n}", quantize=True)
                       for j, n in enumerate(names))
        q = b.shuffle(q, f"{p}.q_heads", reshape=(0, 0, heads, d), second=(0, 2, 1, 3))  # [B, H, S, D]
        k = b.shuffle(k, f"{p}.k_heads", reshape=(0, 0, kv, d), second=(0, 2, 1, 3))  # [B, Hkv, S, D]
        v = b.shuffle(v, f"{p}.v_heads", reshape=(0, 0, kv, d), second=(0, 2, 1, 3))
        if family.qk_norm:  # per head, over D (before RoPE)
            q = b.rms_norm(q, sd[f"{p}.self_attn.q_norm.weight"], eps, f"{p}.self_attn.q_norm", offset, rank=4)
            k = b.rms_norm(k, sd[f"{p}.self_attn.k_norm.weight"], eps, f"{p}.self_attn.k_norm", offset, rank=4)
        cos, sin = rope[kinds[i]]

        def rope_(x, tag, p=p, cos=cos, sin=sin):  # p: this layer's name prefix
            rotated = b.matmul(x, rot, f"{p}.{tag}_rotate_half")
            return b.ew(b.ew(x, cos, E.PROD, f"{p}.{tag}_cos"), b.ew(rotated, sin, E.PROD, f"{p}.{tag}_sin"),
                        E.SUM, f"{p}.{tag}_rope")

        q, k = rope_(q, "q"), rope_(k, "k")
        caches = []
        for kind, new in (("key", k), ("value", v)):
            past = network.add_input(f"past_{kind}_{i}", dt, (-1, kv, L, d))
            upd = network.add_kv_cache_update(past, new, write_index, trt.KVCacheMode.LINEAR)
            upd.name = f"{p}.{kind}_cache_update"
            present = upd.get_output(0)
            present.name = f"present_{kind}_{i}"
            network.mark_output(present)
            caches.append(present)
        k_all, v_all = caches
        if options.attention == "fused":
            # IAttention wants Q pre-scaled; GQA is native (N_q % N_kv == 0); the bool mask says "may attend".
            # decomposable: TensorRT may fall back to separate kernels where no fused kernel fits.
            qs = b.ew(q, scale, E.PROD, f"{p}.q_scaled")
            att = network.add_attention_v2(qs, k_all, v_all, trt.AttentionNormalizationOp.SOFTMAX,
                                           trt.CausalMaskKind.NONE)
            att.mask, att.decomposable, att.name = allowed_4d[windows[i]], True, f"{p}.attention"
            ctx = b.shuffle(att.get_output(0), f"{p}.ctx_merge", first=(0, 2, 1, 3),
                            reshape=(0, 0, heads * d))  # [B, H, S, D] -> [B, S, H*D]
        else:
            qg = b.shuffle(q, f"{p}.q_groups", reshape=(0, kv, -1, d))  # [B, Hkv, G*S, D]
            scores = b.ew(b.matmul(qg, k_all, f"{p}.qk", transpose_b=True), scale, E.PROD, f"{p}.qk_scaled")
            scores = b.cast(scores, trt.float32, f"{p}.scores_fp32")
            if attn_cap:
                scores = b.softcap(scores, attn_cap, f"{p}.attn_softcap")
            scores = b.shuffle(scores, f"{p}.scores_5d", reshape=(0, 0, groups, -1, L))  # [B, Hkv, G, S, L]
            masked = b.named(network.add_select(allowed[windows[i]], scores, neg), f"{p}.masked")
            sm = network.add_softmax(masked)
            sm.axes = 1 << 4
            probs = b.shuffle(b.cast(b.named(sm, f"{p}.softmax"), dt, f"{p}.probs_dtype"), f"{p}.probs_4d",
                              reshape=(0, 0, -1, L))
            ctx = b.matmul(probs, v_all, f"{p}.pv")  # [B, Hkv, G*S, D]
            ctx = b.shuffle(ctx, f"{p}.ctx_heads", reshape=(0, heads, -1, d), second=(0, 2, 1, 3))
            ctx = b.shuffle(ctx, f"{p}.ctx_merge", reshape=(0, 0, heads * d))
        attn_out = b.linear(ctx, sd[f"{p}.self_attn.o_proj.weight"], sd.get(f"{p}.self_attn.o_proj.bias"),
                            f"{p}.self_attn.o_proj", quantize=True)
        if family.sandwich_norms:
            attn_out = b.rms_norm(attn_out, sd[f"{p}.post_attention_layernorm.weight"], eps,
                                  f"{p}.post_attention_layernorm", offset)
            hidden = b.ew(hidden, attn_out, E.SUM, f"{p}.attn_residual")
            mlp_in = b.rms_norm(hidden, sd[f"{p}.pre_feedforward_layernorm.weight"], eps,
                                f"{p}.pre_feedforward_layernorm", offset)
        else:
            hidden = b.ew(hidden, attn_out, E.SUM, f"{p}.attn_residual")
            mlp_in = b.rms_norm(hidden, sd[f"{p}.post_attention_layernorm.weight"], eps,
                                f"{p}.post_attention_layernorm", offset)
        if family.fused_gate_up:  # [gate; up] rows of one weight
            gate_w, up_w = sd[f"{p}.mlp.gate_up_proj.weight"].chunk(2)
        else:
            gate_w, up_w = sd[f"{p}.mlp.gate_proj.weight"], sd[f"{p}.mlp.up_proj.weight"]
        gate = b.linear(mlp_in, gate_w, None, f"{p}.mlp.gate_proj", quantize=True)
        up = b.linear(mlp_in, up_w, None, f"{p}.mlp.up_proj", quantize=True)
        if act == "gelu_tanh":
            gated = b.named(network.add_activation(gate, trt.ActivationType.GELU_TANH), f"{p}.mlp.gelu_tanh")
        else:
            gated = b.ew(gate, b.named(network.add_activation(gate, trt.ActivationType.SIGMOID),
                                       f"{p}.mlp.sigmoid"), E.PROD, f"{p}.mlp.silu")
        down = b.linear(b.ew(gated, up, E.PROD, f"{p}.mlp.gate_up"), sd[f"{p}.mlp.down_proj.weight"], None,
                        f"{p}.mlp.down_proj", quantize=True)
        if family.sandwich_norms:
            down = b.rms_norm(down, sd[f"{p}.post_feedforward_layernorm.weight"], eps,
                              f"{p}.post_feedforward_layernorm", offset)
        hidden = b.ew(hidden, down, E.SUM, f"{p}.mlp_residual")

    # last position: gather index S-1 along the sequence axis, S read from the tensor's shape
    shape = b.named(network.add_shape(hidden), "last.shape")
    seq = b.named(network.add_gather(shape, b.const(torch.tensor([1], dtype=torch.int64), "last.axis1"), 0),
                  "last.seq_len")
    last_idx = b.ew(seq, b.const(torch.tensor([1], dtype=torch.int64), "last.one"), E.SUB, "last.index")
    last = b.named(network.add_gather(hidden, last_idx, 1), "last.hidden")  # [B, 1, H]
    last = b.rms_norm(last, sd["model.norm.weight"], eps, "model.norm", offset)
    head_w = sd["lm_head.weight"] if "lm_head.weight" in sd else sd["model.embed_tokens.weight"]
    logits = b.shuffle(b.linear(last, head_w, None, "lm_head"), "logits_2d", reshape=(0, -1))  # [B, V]
    if final_cap := softcaps(cfg).get("final logit soft-capping"):
        logits = b.softcap(b.cast(logits, trt.float32, "logits_fp32"), final_cap, "final_softcap")
        logits = b.cast(logits, dt, "logits_dtype")
    logits.name = "logits"
    network.mark_output(logits)
    return b.keep
