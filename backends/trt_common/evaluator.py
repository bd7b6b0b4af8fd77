"""Evaluate a TensorRT network definition with torch on the CPU — no GPU, no engine.

The evaluator reads the very ``INetworkDefinition`` handed to the builder back through the TensorRT API (layers in
order, their parameters, constant weights, inputs and outputs) and computes each layer with torch following
TensorRT's documented semantics, in the dtype TensorRT assigns to each tensor (the network is strongly typed).
It keeps no description of its own: what it computes is what the builder would compile. Any layer type it does not
know raises :class:`UnsupportedLayer` naming the layer, so a network is checked before any GPU time is spent.

Useful for any hand-built network: ``NetworkEvaluator(trt, network).run({"input": tensor, ...})``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


class UnsupportedLayer(NotImplementedError):
    pass


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
             trt.int32: torch.int32, trt.int64: torch.int64, trt.bool: torch.bool, trt.int8: torch.int8,
             trt.fp8: torch.float8_e4m3fn}
    if dtype not in table:
        raise UnsupportedLayer(f"tensor dtype {dtype} is not supported by the evaluator")
    return table[dtype]


def _axes(mask: int, ndim: int) -> list[int]:
    return [a for a in range(ndim) if mask & (1 << a)]


class NetworkEvaluator:
    def __init__(self, trt, network):
        self.trt, self.network = trt, network
        T = trt.LayerType
        self.handlers: dict = {
            T.CONSTANT: (trt.IConstantLayer, self._constant), T.GATHER: (trt.IGatherLayer, self._gather),
            T.MATRIX_MULTIPLY: (trt.IMatrixMultiplyLayer, self._matmul),
            T.ELEMENTWISE: (trt.IElementWiseLayer, self._elementwise), T.UNARY: (trt.IUnaryLayer, self._unary),
            T.REDUCE: (trt.IReduceLayer, self._reduce), T.SHUFFLE: (trt.IShuffleLayer, self._shuffle),
            T.SLICE: (trt.ISliceLayer, self._slice), T.CONCATENATION: (trt.IConcatenationLayer, self._concat),
            T.CAST: (trt.ICastLayer, self._cast), T.SOFTMAX: (trt.ISoftMaxLayer, self._softmax),
            T.ACTIVATION: (trt.IActivationLayer, self._activation), T.SELECT: (trt.ISelectLayer, self._select),
            T.SHAPE: (trt.IShapeLayer, self._shape), T.KV_CACHE_UPDATE: (trt.IKVCacheUpdateLayer, self._kv_update),
            T.QUANTIZE: (trt.IQuantizeLayer, self._quantize), T.DEQUANTIZE: (trt.IDequantizeLayer, self._dequantize),
            # An IAttention appears as two boundary layers: the input one holds Q, K, V and the mask; the output
            # one yields the result. The whole attention is computed at the input boundary.
            T.ATTENTION_INPUT: (trt.IAttentionInputLayer, self._attention),
            T.ATTENTION_OUTPUT: (trt.IAttentionOutputLayer, self._attention_output),
        }
        self.layer_types = sorted({str(network.get_layer(i).type) for i in range(network.num_layers)})
        self._order: list | None = None
        self._constants: dict[str, torch.Tensor] = {}

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        env: dict[str, torch.Tensor] = {}
        for i in range(self.network.num_inputs):
            t = self.network.get_input(i)
            if t.name not in inputs:
                raise KeyError(f"network input '{t.name}' was not given")
            env[t.name] = inputs[t.name].to(_torch_dtype(self.trt, t.dtype))
        for layer_type, layer in self._evaluation_order():
            self._evaluate(layer, layer_type, env)
        return {self.network.get_output(j).name: env[self.network.get_output(j).name]
                for j in range(self.network.num_outputs)}

    def _evaluation_order(self) -> list[tuple]:
        """The layers in an order where each comes after the layers it reads, found once per network.

        Layers are stored in creation order, which need not be topological (set_input can wire a later layer's
        output into an earlier one). Kahn's algorithm over tensor names: linear in the layers, where rescanning
        the pending list for ready layers was quadratic in the network's depth (minutes per step on a 30-layer
        model)."""
        if self._order is not None:
            return self._order
        layers = [self.network.get_layer(i) for i in range(self.network.num_layers)]
        available = {self.network.get_input(i).name for i in range(self.network.num_inputs)}
        waiting_on: dict[int, int] = {}
        readers: dict[str, list[int]] = {}
        for index, layer in enumerate(layers):
            names = {layer.get_input(j).name for j in range(layer.num_inputs) if layer.get_input(j) is not None}
            missing = names - available
            waiting_on[index] = len(missing)
            for name in missing:
                readers.setdefault(name, []).append(index)
        ready = [index for index, count in waiting_on.items() if count == 0]
        order = []
        while ready:
            index = ready.pop(0)
            # the type is read now: evaluating a layer re-classes it, after which ``.type`` can mean another
            # attribute (an IActivationLayer's activation type)
            order.append((layers[index].type, layers[index]))
            for k in range(layers[index].num_outputs):
                for reader in readers.get(layers[index].get_output(k).name, []):
                    waiting_on[reader] -= 1
                    if waiting_on[reader] == 0:
                        ready.append(reader)
        if len(order) < len(layers):
            stuck = next(layers[i] for i, count in waiting_on.items() if count > 0)
            raise RuntimeError(f"the network has a cycle or a dangling input at {stuck.name}")
        self._order = order
        return order

    def _evaluate(self, layer, layer_type, env: dict) -> None:
        if layer_type not in self.handlers:
            raise UnsupportedLayer(f"layer '{layer.name}' has type {layer_type}, which the evaluator does not "
                                   f"implement (known: {', '.join(str(k) for k in self.handlers)})")
        cls, handler = self.handlers[layer_type]
        layer.__class__ = cls  # the Python API's way to reach a layer's own attributes
        ins = [env[layer.get_input(j).name] if layer.get_input(j) is not None else None
               for j in range(layer.num_inputs)]
        out = handler(layer, ins)
        want = _torch_dtype(self.trt, layer.get_output(0).dtype)
        env[layer.get_output(0).name] = out.to(want) if out.dtype != want else out

    # --- one method per layer type, after TensorRT's operator documentation -------------------------------
    def _constant(self, layer, ins):
        # A network's weights are fixed once it is defined: convert each constant once, not at every step
        # (a 135M-parameter model would copy every weight per decode step).
        name = layer.get_output(0).name  # unique like every tensor name the environment is keyed by
        if name not in self._constants:
            self._constants[name] = self._constant_tensor(layer)
        return self._constants[name]

    def _constant_tensor(self, layer):
        array = np.asarray(layer.weights)
        want = _torch_dtype(self.trt, layer.get_output(0).dtype)
        if want == torch.bfloat16 and array.dtype != np.float32:  # raw 16-bit words
            t = torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(array.copy())
        return t.reshape(tuple(layer.shape)).to(want)

    def _gather(self, layer, ins):
        data, idx = ins[0], ins[1].long()
        if layer.mode != self.trt.GatherMode.DEFAULT or layer.num_elementwise_dims != 0:
            raise UnsupportedLayer(f"gather '{layer.name}': only DEFAULT mode without elementwise dims")
        a = layer.axis
        idx = torch.where(idx < 0, idx + data.shape[a], idx)
        r = data.movedim(a, 0)[idx]  # idx.shape + data.shape without axis a
        k = idx.dim()
        order = list(range(k, k + a)) + list(range(k)) + list(range(k + a, r.dim()))
        return r.permute(order)

    def _matmul(self, layer, ins):
        M = self.trt.MatrixOperation
        a, b = ins
        ops = (layer.op0, layer.op1)
        if M.VECTOR in ops:
            raise UnsupportedLayer(f"matrix multiply '{layer.name}': VECTOR operands")
        a = a.transpose(-1, -2) if ops[0] == M.TRANSPOSE else a
        b = b.transpose(-1, -2) if ops[1] == M.TRANSPOSE else b
        return torch.matmul(a, b)

    def _elementwise(self, layer, ins):
        E = self.trt.ElementWiseOperation
        a, b = ins
        ops: dict[object, Callable] = {
            E.SUM: torch.add, E.PROD: torch.mul, E.SUB: torch.sub, E.DIV: torch.div, E.MAX: torch.maximum,
            E.MIN: torch.minimum, E.POW: torch.pow, E.GREATER: torch.gt, E.LESS: torch.lt, E.EQUAL: torch.eq,
            E.AND: torch.logical_and, E.OR: torch.logical_or, E.XOR: torch.logical_xor,
            E.FLOOR_DIV: torch.floor_divide}
        if layer.op not in ops:
            raise UnsupportedLayer(f"elementwise '{layer.name}': operation {layer.op}")
        return ops[layer.op](a, b)

    def _unary(self, layer, ins):
        U = self.trt.UnaryOperation
        ops = {U.SQRT: torch.sqrt, U.RECIP: torch.reciprocal, U.NOT: torch.logical_not, U.EXP: torch.exp,
               U.LOG: torch.log, U.NEG: torch.neg, U.ABS: torch.abs, U.SIN: torch.sin, U.COS: torch.cos}
        if layer.op not in ops:
            raise UnsupportedLayer(f"unary '{layer.name}': operation {layer.op}")
        return ops[layer.op](ins[0])

    def _reduce(self, layer, ins):
        R = self.trt.ReduceOperation
        x = ins[0]
        axes = _axes(layer.axes, x.dim())
        ops = {R.SUM: torch.sum, R.AVG: torch.mean, R.MAX: torch.amax, R.MIN: torch.amin}
        if layer.op not in ops:
            raise UnsupportedLayer(f"reduce '{layer.name}': operation {layer.op}")
        return ops[layer.op](x, dim=axes, keepdim=layer.keep_dims)

    def _shuffle(self, layer, ins):
        x = ins[0]
        if len(ins) > 1 and ins[1] is not None:
            raise UnsupportedLayer(f"shuffle '{layer.name}': reshape from a shape tensor")
        x = x.permute(tuple(layer.first_transpose)[: x.dim()])
        dims = layer.reshape_dims
        if dims is not None and len(dims) >= 0 and tuple(dims) != ():
            shape = [x.shape[i] if (d == 0 and layer.zero_is_placeholder) else d for i, d in enumerate(dims)]
            x = x.reshape(shape)
        return x.permute(tuple(layer.second_transpose)[: x.dim()])

    def _slice(self, layer, ins):
        x = ins[0]
        start = ins[1].tolist() if len(ins) > 1 and ins[1] is not None else list(layer.start)
        size = ins[2].tolist() if len(ins) > 2 and ins[2] is not None else list(layer.shape)
        stride = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else list(layer.stride)
        if layer.mode != self.trt.SampleMode.STRICT_BOUNDS:
            raise UnsupportedLayer(f"slice '{layer.name}': mode {layer.mode}")
        index = tuple(slice(s, s + n * st, st) for s, n, st in zip(start, size, stride))
        return x[index]

    def _concat(self, layer, ins):
        return torch.cat(ins, dim=layer.axis)

    def _cast(self, layer, ins):
        return ins[0].to(_torch_dtype(self.trt, layer.to_type))

    def _softmax(self, layer, ins):
        axes = _axes(layer.axes, ins[0].dim())
        if len(axes) != 1:
            raise UnsupportedLayer(f"softmax '{layer.name}' over {len(axes)} axes")
        return torch.softmax(ins[0], dim=axes[0])

    def _activation(self, layer, ins):
        A = self.trt.ActivationType
        ops = {A.SIGMOID: torch.sigmoid, A.RELU: torch.relu, A.TANH: torch.tanh,
               A.GELU_TANH: lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
               A.GELU_ERF: torch.nn.functional.gelu}
        if layer.type not in ops:
            raise UnsupportedLayer(f"activation '{layer.name}': {layer.type}")
        return ops[layer.type](ins[0])

    def _select(self, layer, ins):
        cond, a, b = ins
        return torch.where(cond.bool(), a, b)

    def _shape(self, layer, ins):
        return torch.tensor(tuple(ins[0].shape), dtype=torch.int64)

    def _kv_update(self, layer, ins):
        """Write ``update`` [B, H, S, D] into ``cache`` [B, H, L, D] at slots write_indices[b] .. + S (LINEAR)."""
        cache, update, write = ins
        if layer.cache_mode != self.trt.KVCacheMode.LINEAR:
            raise UnsupportedLayer(f"kv cache update '{layer.name}': mode {layer.cache_mode}")
        out = cache.clone()
        seq = update.shape[2]
        for b, start in enumerate(write.tolist()):
            out[b, :, start:start + seq] = update[b]
        return out

    def _quantize(self, layer, ins):
        """IQuantizeLayer: ``x / scale`` (scales broadcast as in :meth:`_dequantize`) rounded half to even and
        saturated to the output type: int8 [-128, 127], fp8 e4m3 [-448, 448]."""
        if len(ins) > 2 and ins[2] is not None and bool((ins[2].float() != 0).any()):
            raise UnsupportedLayer(f"quantize '{layer.name}': a non-zero zero point")
        x = ins[0].float() / self._expanded_scale(layer, ins[0], ins[1].float())
        want = _torch_dtype(self.trt, layer.get_output(0).dtype)
        if want == torch.int8:
            return torch.round(x).clamp(-128, 127).to(torch.int8)
        if want == torch.float8_e4m3fn:
            return x.clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
        raise UnsupportedLayer(f"quantize '{layer.name}': output type {want}")

    def _expanded_scale(self, layer, x, scale):
        """The scale broadcast to ``x``: per tensor (one value), per axis (1-D along ``layer.axis``) or per block
        (``x``'s rank: each dimension's block is x size / scale size)."""
        if scale.numel() == 1:
            return scale.reshape(())
        if scale.dim() == 1:
            shape = [1] * x.dim()
            shape[layer.axis] = -1
            return scale.reshape(shape)
        if scale.dim() != x.dim():
            raise UnsupportedLayer(f"(de)quantize '{layer.name}': scale rank {scale.dim()} for input rank {x.dim()}")
        for d in range(x.dim()):
            if x.shape[d] % scale.shape[d]:
                raise ValueError(f"(de)quantize '{layer.name}': dimension {d} of {tuple(x.shape)} is not a "
                                 f"multiple of the scale's {tuple(scale.shape)}")
            scale = scale.repeat_interleave(x.shape[d] // scale.shape[d], dim=d)
        return scale

    def _dequantize(self, layer, ins):
        """IDequantizeLayer: ``x * scale`` in float32 (scales as in :meth:`_expanded_scale`; a zero point must be
        zero, as TensorRT requires), returned in the layer's output type."""
        x, scale = ins[0].float(), ins[1].float()
        zero = ins[2] if len(ins) > 2 and ins[2] is not None else None
        if zero is not None and bool((zero.float() != 0).any()):
            raise UnsupportedLayer(f"dequantize '{layer.name}': a non-zero zero point")
        return x * self._expanded_scale(layer, x, scale)

    def _attention(self, layer, ins):
        """IAttention (TensorRT's "Fused Attention" semantics): softmax(Q·Kᵀ + mask)·V with Q already scaled;
        Q [B, Nq, Sq, D], K and V [B, Nkv, Skv, D] (PADDED_BHND), Nq % Nkv == 0 (query head h reads K/V head
        h // (Nq / Nkv)); a bool mask keeps the True positions, a float mask is added; a causal kind aligns the
        triangle to the upper left (key j <= query i) or the lower right (j <= i + Skv - Sq). Computed in float32,
        returned in Q's type."""
        att = layer.attention
        F = self.trt.AttentionIOForm
        if att.query_form != F.PADDED_BHND or att.key_value_form != F.PADDED_BHND:
            raise UnsupportedLayer(f"attention '{att.name}': only the PADDED_BHND layout")
        if att.normalization_quantize_scale is not None or att.num_ranks != 1:
            raise UnsupportedLayer(f"attention '{att.name}': quantized normalization or multi-rank attention")
        if att.key_value_lengths is not None:
            raise UnsupportedLayer(f"attention '{att.name}': per-batch key/value lengths")
        q, k, v = ins[0], ins[1], ins[2]
        mask = ins[3] if len(ins) > 3 else None
        groups = q.shape[1] // k.shape[1]
        if q.shape[1] != groups * k.shape[1]:
            raise ValueError(f"attention '{att.name}': {q.shape[1]} query heads are not a multiple of {k.shape[1]}")
        k = k.float().repeat_interleave(groups, dim=1)
        v = v.float().repeat_interleave(groups, dim=1)
        scores = torch.matmul(q.float(), k.transpose(-1, -2))  # [B, Nq, Sq, Skv]
        if mask is not None:
            scores = scores.masked_fill(~mask.bool(), float("-inf")) if mask.dtype == torch.bool \
                else scores + mask.float()
        C = self.trt.CausalMaskKind
        if att.causal_kind != C.NONE:
            sq, skv = scores.shape[-2:]
            offset = 0 if att.causal_kind == C.UPPER_LEFT else skv - sq
            rows = torch.arange(sq).view(-1, 1)
            scores = scores.masked_fill(torch.arange(skv).view(1, -1) > rows + offset, float("-inf"))
        N = self.trt.AttentionNormalizationOp
        if att.norm_op == N.SOFTMAX:
            scores = torch.softmax(scores, dim=-1)
        elif att.norm_op != N.NONE:
            raise UnsupportedLayer(f"attention '{att.name}': normalization {att.norm_op}")
        return torch.matmul(scores, v).to(q.dtype)

    def _attention_output(self, layer, ins):
        return ins[0]
