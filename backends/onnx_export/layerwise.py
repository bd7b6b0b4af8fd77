"""The layerwise ONNX export: each part of the decode step traced once, the decoder layer's nodes repeated per layer.

Why: every stage of ``torch.onnx.export`` (torch.export's trace, ``run_decompositions``' second trace, the
translation to ONNX and onnxscript's optimizer) costs time in proportion to the graph, and a decoder's layers are
one graph with other weights. So the three parts of the step (graph.py: ``prologue``, ``layer_step``, ``epilogue``)
are exported on their own, the layer once per kind (``layer_kind``: Gemma 3's local and global layers are two
kinds), and the layer's ONNX nodes are stamped once per layer with that layer's weights. ``forward``, which the
whole-model export traces, chains the same three methods: the same code writes both graphs.

How the stitched graph stays the one the whole-model export writes:
- each part is exported with the same options, opset and translation table, without the optimizer; its weights
  (parameters and buffers) are then made graph inputs and onnxscript's optimizer runs on it (what
  ``torch.onnx.export(optimize=True)`` runs), so that the optimizer neither folds a weight into the part's graph
  nor merges two equal weights (two norms equal in one layer may differ in the next);
- on the stitched graph, constant folding then folds the weights as it does in the whole-model export (the
  ``Transpose`` of a linear's weight becomes the transposed initializer where the weight has no other consumer).
tests/test_onnx_layerwise.py compares both exports' logits under ONNX Runtime for every family and graph form.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from backends.onnx_export.graph import GRAPH_INPUTS, StaticCacheDecoder, example_inputs


class ProloguePart(nn.Module):
    """graph inputs -> (*state, *derived context)"""

    def __init__(self, decoder: StaticCacheDecoder):
        super().__init__()
        self.decoder = decoder  # weights it does not read are left out of its graph

    def forward(self, *inputs):
        state, derived = self.decoder.prologue(*inputs)
        return (*state, *derived.values())


class LayerPart(nn.Module):
    """(*state, *what the layer reads, past_key, past_value) -> (*state, present_key, present_value). Its weights are
    layer ``i``'s only, named the same for every layer (``mods.layer.self_attn.q_proj.weight``, ...)."""

    def __init__(self, decoder: StaticCacheDecoder, i: int, state_size: int):
        super().__init__()
        self._decoder = (decoder,)  # a tuple: not a submodule, so that no other layer's weight belongs to the part
        self.i, self.state_size = i, state_size
        parts = decoder.layer_modules(i)
        self.keys = list(parts)
        self.mods = nn.ModuleDict({k: m for k, m in parts.items() if isinstance(m, nn.Module)})
        for k, t in parts.items():
            if not isinstance(t, nn.Module):
                self.register_buffer(k, t, persistent=False)

    def forward(self, *args):
        decoder = self._decoder[0]
        reads = decoder.layer_reads(self.i)
        state, context = args[:self.state_size], args[self.state_size:self.state_size + len(reads)]
        mods = {k: self.mods[k] if k in self.mods else getattr(self, k) for k in self.keys}
        state, k_all, v_all = decoder.layer_step(self.i, mods, tuple(state), dict(zip(reads, context)), args[-2],
                                                 args[-1])
        return (*state, k_all, v_all)


class EpiloguePart(nn.Module):
    """(*state, *what the epilogue reads) -> logits"""

    def __init__(self, decoder: StaticCacheDecoder, state_size: int):
        super().__init__()
        self.decoder, self.state_size = decoder, state_size

    def forward(self, *args):
        state, context = args[:self.state_size], args[self.state_size:]
        return self.decoder.epilogue(tuple(state), dict(zip(self.decoder.EPILOGUE_READS, context)))


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every name of every parameter and buffer: a tied weight has two (the exporter may use either)."""
    return {**dict(module.named_parameters(remove_duplicate=False)),
            **dict(module.named_buffers(remove_duplicate=False))}


def _dims_of(tensors_1, tensors_2, known: dict) -> list[dict]:
    """Dynamic axes of each tensor, read from two runs whose batch, sequence and fill sizes all differ: an axis
    whose size changes is the ``Dim`` with that pair of sizes (``known``: (size 1, size 2) -> Dim)."""
    shapes = []
    for a, b in zip(tensors_1, tensors_2):
        axes = {}
        for axis, (n1, n2) in enumerate(zip(a.shape, b.shape)):
            if n1 != n2:
                if (n1, n2) not in known:
                    raise ValueError(f"axis {axis} of a {tuple(a.shape)} tensor follows no input dimension")
                axes[axis] = known[(n1, n2)]
        shapes.append(axes)
    return shapes


def _export_part(part: nn.Module, args, shapes, in_names, out_names, opset, translations):
    """The part's ONNX model (onnx_ir), optimized as torch.onnx.export would, with its weights as graph inputs;
    and {input value: weight name}."""
    import onnxscript.optimizer
    import onnxscript.rewriter.onnx_fusions

    # forward(*args): one varargs tuple for torch.export, so its shapes nest as one entry
    program = torch.onnx.export(part, tuple(args), dynamic_shapes=(tuple(shapes),), input_names=in_names,
                                output_names=out_names, opset_version=opset, dynamo=True, verbose=False,
                                optimize=False, custom_translation_table=translations)
    model, weights = program.model, _weights(part)
    weight_inputs = {}
    for name in [n for n in model.graph.initializers if n in weights]:
        value = model.graph.initializers.pop(name)
        value.const_value = None
        model.graph.inputs.append(value)
        weight_inputs[value] = name
    # a weight left as a constant would be shared by every stamp of a layer: refuse rather than repeat it
    addresses = {t.data_ptr() for t in weights.values()}
    for value in model.graph.initializers.values():
        raw = getattr(value.const_value, "raw", None)
        if isinstance(raw, torch.Tensor) and raw.data_ptr() in addresses:
            raise RuntimeError(f"the part's constant {value.name} is one of its weights under a name not known")
    # what torch.onnx.export(optimize=True) runs (onnxscript._framework_apis.torch_2_8.optimize)
    onnxscript.optimizer.optimize_ir(model)
    onnxscript.rewriter.onnx_fusions.fuse(model)
    if model.functions:
        raise RuntimeError(f"the exported part still calls functions: {list(model.functions)}")
    return model, weight_inputs


class _Stitcher:
    """Builds the whole graph from the parts' graphs: each stamp clones a part's nodes under a name prefix."""

    def __init__(self, decoder: StaticCacheDecoder):
        import onnx_ir as ir

        self.ir = ir
        self.nodes, self.initializers, self.opsets = [], [], {}
        self._weight_values: dict[int, object] = {}  # id(tensor) -> initializer: a tensor two parts read is one
        self._constants: dict[int, object] = {}  # id(part constant) -> initializer: shared by all stamps
        self._names = {id(t): n for n, t in _weights(decoder).items()}

    def weight(self, tensor: torch.Tensor, fallback_name: str):
        ir = self.ir
        value = self._weight_values.get(id(tensor))
        if value is None:
            from onnx_ir.tensor_adapters import TorchTensor

            name = self._names.get(id(tensor), fallback_name)
            value = ir.Value(name=name, type=ir.TensorType(TorchTensor(tensor).dtype), shape=ir.Shape(tensor.shape),
                             const_value=TorchTensor(tensor, name=name))
            self._weight_values[id(tensor)] = value
            self.initializers.append(value)
        return value

    def stamp(self, model, prefix: str, inputs: dict) -> list:
        """Clone ``model``'s nodes; ``inputs``: {part input value: whole-graph value}; returns the stamp's outputs."""
        ir = self.ir
        graph = model.graph
        self.opsets.update(graph.opset_imports)
        mapped = dict(inputs)
        for value in graph.initializers.values():
            if id(value) not in self._constants:
                const = ir.Value(name=f"{prefix}{value.name}", type=value.type,
                                 shape=value.shape.copy() if value.shape is not None else None,
                                 const_value=value.const_value)
                self._constants[id(value)] = const
                self.initializers.append(const)
            mapped[value] = self._constants[id(value)]
        for node in graph:
            new = ir.Node(node.domain, node.op_type, [None if v is None else mapped[v] for v in node.inputs],
                          list(node.attributes.values()), overload=node.overload, num_outputs=len(node.outputs),
                          version=node.version, name=f"{prefix}{node.name or node.op_type}",
                          metadata_props=dict(node.metadata_props))
            for old, out in zip(node.outputs, new.outputs):
                out.name, out.type = f"{prefix}{old.name}", old.type
                out.shape = old.shape.copy() if old.shape is not None else None
                mapped[old] = out
            self.nodes.append(new)
        return [mapped[v] for v in graph.outputs]


def export_layerwise(decoder: StaticCacheDecoder, input_shapes: list, in_names: list[str], out_names: list[str],
                     opset: int, translations: dict, max_seq: int):
    """The whole decode-step graph as an onnx_ir model, built from one export per part (module docstring).
    ``input_shapes``: the dynamic axes of the graph inputs before the caches, as for the whole-model export."""
    examples = _trace_examples(decoder, input_shapes, in_names, max_seq)
    export = dict(opset=opset, translations=translations)
    stitcher = _Stitcher(decoder)
    graph_inputs = {}  # name -> the stitched graph's input value
    prologue, state, context = _stamp_prologue(decoder, examples, input_shapes, in_names, graph_inputs, stitcher,
                                               export)
    state, past_inputs, presents = _stamp_layers(decoder, examples, state, context, graph_inputs, stitcher, export)
    logits = _stamp_epilogue(decoder, examples, state, context, stitcher, export)
    main_inputs = [graph_inputs[n] for n in in_names[:GRAPH_INPUTS]] + past_inputs
    if [v.name for v in main_inputs] != in_names or [logits.name, *(v.name for v in presents)] != out_names:
        raise RuntimeError("the stitched graph's inputs or outputs are not the whole-model export's")
    return _folded_model(stitcher, main_inputs, [logits, *presents], prologue)


@dataclass
class _Examples:
    """What the parts are traced on: the prologue's outputs on the first of two example input sets, and the dynamic
    axes of every tensor that passes between parts."""

    runs: list  # two example input sets (graph inputs, then the caches)
    state: tuple  # the residual stream and what travels with it, layer to layer
    state_names: list[str]
    state_dims: list[dict]
    derived: dict  # name -> tensor: what the prologue derives for the layers (masks, RoPE tables, ...)
    context: dict  # graph input or derived name -> tensor
    context_dims: dict
    batch_dim: object


def _trace_examples(decoder: StaticCacheDecoder, input_shapes: list, in_names: list[str], max_seq: int) -> _Examples:
    config = decoder.hf.config
    param = next(decoder.hf.parameters())
    # two example sets whose batch (2, 3), sequence (3, 4) and fill (5, 6) sizes all differ: the dynamic axes of
    # every tensor between the parts are read off them
    runs = [example_inputs(config, param.dtype, param.device, max_seq, decoder.attention, batch=b, seq=s)
            for b, s in ((2, 3), (3, 4))]
    known = {}
    for shape, a, b in zip(input_shapes, runs[0], runs[1]):
        known.update({(a.shape[axis], b.shape[axis]): dim for axis, dim in shape.items()})
    with torch.no_grad():
        outs = [decoder.prologue(*run[:GRAPH_INPUTS]) for run in runs]
    (state, derived), (state_b, derived_b) = outs
    derived_dims = dict(zip(derived, _dims_of(derived.values(), derived_b.values(), known)))
    return _Examples(runs=runs, state=state, state_names=[f"state_{k}" for k in range(len(state))],
                     state_dims=_dims_of(state, state_b, known), derived=derived,
                     context={**dict(zip(in_names, runs[0][:GRAPH_INPUTS])), **derived},
                     context_dims={**dict(zip(in_names, input_shapes)), **derived_dims},
                     batch_dim=input_shapes[0][0])


def _stamp_prologue(decoder: StaticCacheDecoder, examples: _Examples, input_shapes: list, in_names: list[str],
                    graph_inputs: dict, stitcher: _Stitcher, export: dict):
    """Export and stamp the prologue; adds the graph inputs before the caches to ``graph_inputs``. Returns the
    prologue's model, the state values and the context values (graph inputs and derived) the layers read."""
    import onnx_ir as ir

    ex = examples
    with torch.no_grad():
        prologue, weight_inputs = _export_part(ProloguePart(decoder), ex.runs[0][:GRAPH_INPUTS], input_shapes,
                                               in_names[:GRAPH_INPUTS], [*ex.state_names, *ex.derived], **export)
    for value in prologue.graph.inputs[:GRAPH_INPUTS]:
        graph_inputs[value.name] = ir.Value(name=value.name, type=value.type, shape=value.shape.copy())
    prologue_weights = _weights(ProloguePart(decoder))
    outs = stitcher.stamp(prologue, "prologue/", _part_inputs(prologue, graph_inputs, weight_inputs,
                                                               prologue_weights, stitcher))
    context = {**{n: graph_inputs[n] for n in in_names[:GRAPH_INPUTS] if n in graph_inputs},
               **dict(zip(ex.derived, outs[len(ex.state):]))}
    return prologue, outs[:len(ex.state)], context


def _stamp_layers(decoder: StaticCacheDecoder, examples: _Examples, state: list, context: dict, graph_inputs: dict,
                  stitcher: _Stitcher, export: dict) -> tuple[list, list, list]:
    """Export each kind of decoder layer once and stamp it per layer with that layer's weights; adds the cache inputs
    to ``graph_inputs``. Returns the state values after the last layer, the cache inputs and the present_* outputs."""
    import onnx_ir as ir

    ex = examples
    templates = {}  # layer kind -> (part model, its weight inputs)
    past_inputs, presents = [], []
    past = ex.runs[0][GRAPH_INPUTS:]
    for i in range(decoder.num_layers):
        part = LayerPart(decoder, i, len(ex.state))
        reads = decoder.layer_reads(i)
        kind = decoder.layer_kind(i)
        if kind not in templates:
            args = [*ex.state, *(ex.context[n] for n in reads), past[2 * i], past[2 * i + 1]]
            shapes = [*ex.state_dims, *(ex.context_dims[n] for n in reads), {0: ex.batch_dim}, {0: ex.batch_dim}]
            names = [*ex.state_names, *reads, "past_key", "past_value"]
            with torch.no_grad():
                templates[kind] = _export_part(part, args, shapes, names,
                                               [*ex.state_names, "present_key", "present_value"], **export)
        model, weight_inputs = templates[kind]
        by_name = {v.name: v for v in model.graph.inputs}
        for name, cache in (("past_key", f"past_key_{i}"), ("past_value", f"past_value_{i}")):
            template = by_name[name]
            graph_inputs[cache] = ir.Value(name=cache, type=template.type, shape=template.shape.copy())
            past_inputs.append(graph_inputs[cache])
        data = {**dict(zip(ex.state_names, state)), **{n: context[n] for n in reads},
                "past_key": graph_inputs[f"past_key_{i}"], "past_value": graph_inputs[f"past_value_{i}"]}
        outs = stitcher.stamp(model, f"layers.{i}/", _part_inputs(model, data, weight_inputs, _weights(part),
                                                                  stitcher))
        state = outs[:len(ex.state)]
        for value, name in zip(outs[len(ex.state):], (f"present_key_{i}", f"present_value_{i}")):
            value.name = name
            presents.append(value)
    return state, past_inputs, presents


def _stamp_epilogue(decoder: StaticCacheDecoder, examples: _Examples, state: list, context: dict,
                    stitcher: _Stitcher, export: dict):
    """Export and stamp the epilogue (final norm and logits); returns the ``logits`` value."""
    ex = examples
    epilogue_part = EpiloguePart(decoder, len(ex.state))
    args = [*ex.state, *(ex.context[n] for n in decoder.EPILOGUE_READS)]
    shapes = [*ex.state_dims, *(ex.context_dims[n] for n in decoder.EPILOGUE_READS)]
    names = [*ex.state_names, *decoder.EPILOGUE_READS]
    with torch.no_grad():
        epilogue, weight_inputs = _export_part(epilogue_part, args, shapes, names, ["logits"], **export)
    data = {**dict(zip(ex.state_names, state)), **{n: context[n] for n in decoder.EPILOGUE_READS}}
    (logits,) = stitcher.stamp(epilogue, "epilogue/", _part_inputs(epilogue, data, weight_inputs,
                                                                    _weights(epilogue_part), stitcher))
    logits.name = "logits"
    return logits


def _folded_model(stitcher: _Stitcher, inputs: list, outputs: list, prologue):
    """The stitched graph as a model, its weights folded and what the parts computed each for itself shared."""
    import onnx_ir as ir
    import onnxscript.optimizer
    from onnx_ir.passes import common as common_passes

    graph = ir.Graph(inputs, outputs, nodes=stitcher.nodes, initializers=stitcher.initializers,
                     opset_imports=stitcher.opsets, name="main_graph")
    model = ir.Model(graph, ir_version=prologue.ir_version, producer_name=prologue.producer_name,
                     producer_version=prologue.producer_version)
    # fold the weights as the whole-model export's optimizer does (module docstring); the rest was optimized per part
    onnxscript.optimizer.fold_constants_ir(model)
    # and share what the parts computed each for itself (shape arithmetic, the negated attention mask)
    for step in (common_passes.RemoveUnusedNodesPass(),
                 common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
                 common_passes.CommonSubexpressionEliminationPass()):
        step(model)
    for value in model.graph.initializers.values():
        if _strided(value.const_value):
            value.const_value = _contiguous_when_written(value.const_value)
    return model


def _strided(tensor) -> bool:
    return isinstance(getattr(tensor, "raw", None), np.ndarray) and not tensor.raw.flags.c_contiguous


def _contiguous_when_written(tensor):
    """A folded transpose is a strided numpy view, and numpy writes a strided array element by element (a 46 MB
    weight: 0.5 s, against 0.04 s for torch's blocked copy and a contiguous write). Copied with torch when
    written, one weight at a time: no second copy of all weights in memory."""
    import onnx_ir as ir

    def contiguous():
        array = tensor.numpy()
        bits = array.view(f"u{array.itemsize}")  # torch reads no ml_dtypes (bfloat16): copy the bits
        return ir.Tensor(torch.from_numpy(bits).contiguous().numpy().view(array.dtype), dtype=tensor.dtype,
                         name=tensor.name)

    return ir.LazyTensor(contiguous, dtype=tensor.dtype, shape=tensor.shape, name=tensor.name)


def _part_inputs(model, data: dict, weight_inputs: dict, weights: dict, stitcher: _Stitcher) -> dict:
    """{part input value: whole-graph value}: data inputs by name, weights as this stamp's tensors."""
    from onnx_ir.tensor_adapters import TorchTensor

    mapped = {}
    for value in model.graph.inputs:
        if not value.uses():
            continue  # e.g. a weight of the decoder the prologue does not read
        if value in weight_inputs:
            tensor = weights[weight_inputs[value]]
            if list(tensor.shape) != list(value.shape) or TorchTensor(tensor).dtype != value.dtype:
                raise RuntimeError(f"{weight_inputs[value]} differs in shape or dtype from the layer traced")
            mapped[value] = stitcher.weight(tensor, weight_inputs[value])
        elif value.name in data:
            mapped[value] = data[value.name]
        else:
            raise RuntimeError(f"part input {value.name} has no source in the stitched graph")
    return mapped
