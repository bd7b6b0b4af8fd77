"""Weight-only quantization schemes: what ``quant=none|int8|int4|fp8`` means, for every backend alike.

A scheme quantizes the weight of every linear layer inside the decoder layers (q/k/v/o, gate/up/down); the
embedding and the lm_head stay in the model dtype (as AWQ/GPTQ checkpoints keep them), and activations stay in
``model.dtype``. Each output row of a weight ``W [out, in]`` is cut into groups of ``group_size`` consecutive
input columns (0 = the whole row: one scale per output channel), each group with its own scale:

- int8 / int4, symmetric:  ``s = max|w| / ((2^bits - 1) / 2)`` (127.5 / 7.5, torchao's mapping),
  ``q = clamp(round(w / s), -2^(bits-1), 2^(bits-1) - 1)``, ``w' = q s``;
- int8 / int4, asymmetric: ``s = (max - min) / (2^bits - 1)``, ``z = clamp(round(-min / s))``,
  ``q = clamp(round(w / s) + z, 0, 2^bits - 1)``, ``w' = (q - z) s``;
- fp8 (e4m3): ``s = max|w| / 448`` per output channel, ``q = fp8(w / s)``, ``w' = q s``.

:func:`fake_quantize` computes ``w'`` in float32 with torch: it defines the scheme, gives the reference of "what
the scheme costs" (the HF model with ``w'`` in place of ``w``, see :func:`quantized_reference`) and the scales a
hand-built network bakes in. Backends run their own libraries' kernels (torchao, ONNX Runtime's MatMulNBits,
TensorRT Q/DQ), whose rounding may differ in the last bit (e.g. tinygemm keeps its zero point in floating point);
the accuracy columns measure the difference.

Defaults (``quant_options.*=null``): int8 and int4 use groups of 128 (halved until every linear's input width is
a multiple, at least 16); int8/fp8 are symmetric and int4 asymmetric (what tinygemm and MatMulNBits serve best);
fp8 scales per output channel.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from harness.errors import UserError

SCHEMES = ("none", "int8", "int4", "fp8")
BITS = {"int8": 8, "int4": 4, "fp8": 8}
DEFAULT_GROUP = 128
MIN_GROUP = 16  # MatMulNBits' smallest block; below it scales cost more bytes than the weights they save
FP8_MAX = 448.0  # largest finite float8_e4m3fn
# Per scheme: a quantized backend passes validation when its drift from the float32 model is at most
# FACTOR x the drift of the same scheme applied to the HF model in float32 (fake_quantize), plus the dtype's own
# tolerance (harness/accuracy/validate.py). 2x leaves room for a library's own rounding (tinygemm's float zero point,
# MatMulNBits' scale dtype) and the bf16 activations, while a wrong scale or a transposed group is caught (those
# drift by 10x or more, measured on tiny-llama).
DRIFT_FACTOR = {"int8": 2.0, "int4": 2.0, "fp8": 2.0}
# Which HF parameters a scheme quantizes: the decoder layers' linear weights.
LINEAR_SUFFIXES = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
                   "up_proj.weight", "down_proj.weight")


@dataclass(frozen=True)
class QuantScheme:
    """A resolved scheme: no field is left to a default."""

    scheme: str = "none"
    group_size: int = 0  # input columns per scale; 0 = one scale per output channel
    symmetric: bool = True

    @property
    def enabled(self) -> bool:
        return self.scheme != "none"

    @property
    def bits(self) -> int:
        return BITS.get(self.scheme, 0)

    @property
    def label(self) -> str:
        """``none``, ``int8-g128``, ``int4-g128-asym``, ``fp8-pc`` (pc: per output channel)."""
        if not self.enabled:
            return "none"
        group = f"g{self.group_size}" if self.group_size else "pc"
        return f"{self.scheme}-{group}{'' if self.symmetric else '-asym'}"

    def as_dict(self) -> dict:
        return {"quant": self.scheme, "quant_group_size": self.group_size, "quant_symmetric": self.symmetric,
                "quant_label": self.label}


def linear_input_widths(config) -> list[int]:
    """The input widths of the quantized linears (hidden size for q/k/v/gate/up, heads*D for o, intermediate
    for down)."""
    from harness.model.sources import head_dim

    return [config.hidden_size, config.num_attention_heads * head_dim(config), config.intermediate_size]


def resolve(scheme: str, group_size: int | None, symmetric: bool | None, config) -> QuantScheme:
    """The scheme of ``quant=...`` / ``quant_options.*`` for this model, or a UserError saying how to fix it."""
    if scheme not in SCHEMES:
        raise UserError(f"unknown quant '{scheme}'", f"use quant={' | quant='.join(SCHEMES)}")
    if scheme == "none":
        return QuantScheme()
    widths = linear_input_widths(config)
    if scheme == "fp8":
        if group_size not in (None, 0):
            raise UserError(f"quant=fp8 scales per output channel, not per group of {group_size}",
                            "drop quant_options.group_size or set it to 0")
        if symmetric is False:
            raise UserError("quant=fp8 is symmetric only", "drop quant_options.symmetric=false")
        return QuantScheme("fp8", 0, True)
    if group_size is None:
        group_size = DEFAULT_GROUP
        while group_size > MIN_GROUP and any(w % group_size for w in widths):
            group_size //= 2
    if group_size < 0 or (group_size and (group_size < MIN_GROUP or group_size & (group_size - 1))):
        raise UserError(f"quant_options.group_size={group_size} is not 0 or a power of two >= {MIN_GROUP}",
                        "use 0 (per output channel), 32, 64, 128 or 256")
    bad = sorted({w for w in widths if group_size and w % group_size})
    if bad:
        raise UserError(f"quant_options.group_size={group_size} does not divide the linear input widths {bad}",
                        "use a smaller power of two, or 0 (per output channel)")
    if symmetric is None:
        symmetric = scheme != "int4"
    return QuantScheme(scheme, group_size, bool(symmetric))


def _groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """[out, in] -> [out, in / g, g] (g = in for per-channel)."""
    out, width = w.shape
    g = group_size or width
    return w.reshape(out, width // g, g)


def quantize_weight(w: torch.Tensor, q: QuantScheme) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(codes, scales, zero_points)`` of a weight [out, in]: codes int8 [out, in] (fp8: float8_e4m3fn),
    scales float32 [out, in / g], zero points int32 [out, in / g] (asymmetric only, else None)."""
    grouped = _groups(w.detach().float(), q.group_size)
    if q.scheme == "fp8":
        scale = (grouped.abs().amax(-1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
        codes = (grouped / scale).to(torch.float8_e4m3fn)
        return codes.reshape(w.shape), scale.squeeze(-1), None
    levels = 2 ** q.bits
    if q.symmetric:
        # torchao's symmetric mapping: max|w| spans half the code range, (2^bits - 1) / 2 steps (127.5, 7.5)
        scale = (grouped.abs().amax(-1, keepdim=True) / ((levels - 1) / 2)).clamp(min=1e-12)
        codes = torch.clamp(torch.round(grouped / scale), -levels // 2, levels // 2 - 1)
        return codes.to(torch.int8).reshape(w.shape), scale.squeeze(-1), None
    lo = grouped.amin(-1, keepdim=True).clamp(max=0.0)  # the range holds 0, so zero is exact (padding, ReLU)
    hi = grouped.amax(-1, keepdim=True).clamp(min=0.0)
    scale = ((hi - lo) / (levels - 1)).clamp(min=1e-12)
    zero = torch.clamp(torch.round(-lo / scale), 0, levels - 1)
    codes = torch.clamp(torch.round(grouped / scale) + zero, 0, levels - 1)
    # unsigned codes shifted into int8's range keep one storage type for every integer scheme
    return (codes - levels // 2).to(torch.int8).reshape(w.shape), scale.squeeze(-1), \
        (zero - levels // 2).to(torch.int32).squeeze(-1)


def dequantize_weight(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                      group_size: int) -> torch.Tensor:
    """float32 ``w'`` [out, in] from :func:`quantize_weight`'s output."""
    grouped = _groups(codes.float(), group_size)
    if zero is not None:
        grouped = grouped - zero.float().unsqueeze(-1)
    return (grouped * scale.unsqueeze(-1)).reshape(codes.shape)


def fake_quantize(w: torch.Tensor, q: QuantScheme) -> torch.Tensor:
    """``w'``: the weight as the scheme stores it, back in ``w``'s dtype (identity for quant=none)."""
    if not q.enabled:
        return w
    return dequantize_weight(*quantize_weight(w, q), q.group_size).to(w.dtype)


def is_quantized_param(name: str) -> bool:
    return ".layers." in name and name.endswith(LINEAR_SUFFIXES)


@torch.no_grad()
def quantized_reference(model, q: QuantScheme):
    """``model`` (float32, modified in place and returned) with every quantized weight replaced by ``w'``."""
    for name, param in model.named_parameters():
        if is_quantized_param(name):
            param.copy_(fake_quantize(param, q))
    return model


def weight_bytes(config, q: QuantScheme, dtype_bytes: int, zero_point_bits: int | None = None) -> float:
    """Bytes a decode step reads for the matmul weights under ``q``: quantized linears (codes + one scale per
    group in the activation dtype, + a zero point per group when asymmetric: ``zero_point_bits`` wide where the
    layout packs them, else in the activation dtype), the lm_head in the model dtype."""
    from harness.model.sources import param_count

    counts = param_count(config)
    quantized = sum(param_count_of_linears(config))
    other = counts["matmul"] - quantized  # lm_head (and the norms counted in matmul)
    if not q.enabled:
        return float(counts["matmul"] * dtype_bytes)
    zero_point = 0 if q.symmetric else (zero_point_bits / 8 if zero_point_bits else dtype_bytes)
    per_group = dtype_bytes + zero_point  # scale (+ zero point) per group
    scale_bytes = sum(n * per_group / (q.group_size or width)
                      for n, width in zip(param_count_of_linears(config), _widths_per_linear(config)))
    return float(quantized * q.bits / 8 + scale_bytes + other * dtype_bytes)


def _linear_shapes(config) -> Iterable[tuple[int, int]]:
    """(out, in) of every quantized linear of one decoder layer."""
    from harness.model.sources import head_dim

    h, i, d = config.hidden_size, config.intermediate_size, head_dim(config)
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    return ((heads * d, h), (kv * d, h), (kv * d, h), (h, heads * d), (i, h), (i, h), (h, i))


def param_count_of_linears(config) -> list[int]:
    return [config.num_hidden_layers * o * n for o, n in _linear_shapes(config)]


def _widths_per_linear(config) -> list[int]:
    return [n for _, n in _linear_shapes(config)]
