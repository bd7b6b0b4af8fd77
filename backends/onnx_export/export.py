"""torch.onnx.export (dynamo) of :class:`StaticCacheDecoder`, the checks every export must pass, and the artifact.

Dynamic axes: batch and sequence (``Dim``s); the cache length is fixed at export (static KV cache).
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch

from backends.onnx_export.graph import (
    GRAPH_INPUTS,
    GqaStaticCacheDecoder,
    StaticCacheDecoder,
    example_inputs,
    io_names,
)

OPSET = 20
# The exporter lists torchvision ops it cannot register on every run; irrelevant here.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def decoder_for(hf_model, attention: str, fused_ops: bool = False, max_seq: int = 0) -> StaticCacheDecoder:
    """The module to export: explicit | gqa attention; ``fused_ops`` (gqa only): fused.py's graph. The values were
    checked with the backend's options (onnxruntime_backend/options.py)."""
    if fused_ops:
        from backends.onnx_export.fused import (
            FusedGqaStaticCacheDecoder,  # fused.py builds on graph.py
        )

        return FusedGqaStaticCacheDecoder(hf_model, max_seq)
    return {"explicit": StaticCacheDecoder, "gqa": GqaStaticCacheDecoder}[attention](hf_model, max_seq, attention)


def dynamic_shapes_and_translations(config, max_seq: int, attention: str, fused_ops: bool) -> tuple[list, dict]:
    """The dynamic axes of the graph inputs (batch, sequence; for the explicit graph the used cache length too) and
    the custom translation table of the graph form (GroupQueryAttention, fused.py's ops)."""
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=1, max=max_seq)
    # *past is one varargs tuple for torch.export: its shapes nest as one entry
    past = tuple([{0: batch}] * (2 * config.num_hidden_layers))
    if attention != "gqa":
        used = torch.export.Dim("kv_len", min=1, max=max_seq)
        return [{0: batch, 1: seq}, {0: batch, 1: seq}, {0: seq}, {0: batch, 1: used}, past], {}
    from backends.onnx_export.gqa import onnx_translation

    translations = onnx_translation()
    if fused_ops:
        from backends.onnx_export import fused

        translations.update(fused.onnx_translation())
    return [{0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch}, {}, past], translations


def op_counts(model) -> dict[str, int]:
    """Op type -> nodes of that type in the (onnx) model's main graph."""
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ops


def export_onnx(hf_model, max_seq: int, path: Path, attention: str = "explicit", fused_ops: bool = False,
                opset: int = OPSET, layerwise: bool = True) -> dict:
    """Write the model to ``path`` (weights in one external-data file beside it); returns export facts.
    ``layerwise``: trace each part of the step once and repeat the decoder layer (layerwise.py); False: trace the
    whole model (the reference the layerwise graph is tested against)."""
    import onnx

    config = hf_model.config
    wrapper = decoder_for(hf_model, attention, fused_ops, max_seq).eval()
    device = next(hf_model.parameters()).device
    dtype = next(hf_model.parameters()).dtype
    args = example_inputs(config, dtype, device, max_seq, attention)
    in_names, out_names = io_names(config.num_hidden_layers, attention)
    shapes, translations = dynamic_shapes_and_translations(config, max_seq, attention, fused_ops)
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if layerwise:
            import onnx_ir

            from backends.onnx_export.layerwise import export_layerwise

            graph = export_layerwise(wrapper, shapes[:GRAPH_INPUTS], in_names, out_names, opset, translations,
                                     max_seq)
            t_graph = time.perf_counter()
            onnx_ir.save(graph, str(path), external_data=f"{path.name}.data")
        else:
            program = torch.onnx.export(wrapper, args, dynamic_shapes=tuple(shapes), input_names=in_names,
                                        output_names=out_names, opset_version=opset, dynamo=True, verbose=False,
                                        optimize=True, custom_translation_table=translations)
            t_graph = time.perf_counter()
            program.save(str(path), external_data=True)
    t_saved = time.perf_counter()
    model = onnx.load(str(path), load_external_data=False)
    if fused_ops:
        from backends.onnx_export.fused import blank_unused_norm_outputs

        if blank_unused_norm_outputs(model):  # rewrites the graph only; the weights file stays as it is
            onnx.save(model, str(path))
    onnx.checker.check_model(str(path))  # by path: works past the 2 GB protobuf limit
    ops = op_counts(model)
    done = time.perf_counter()
    return {"export_seconds": done - t0, "export_method": "layerwise" if layerwise else "whole model",
            # the parts of export_seconds: the graph (trace, translate, optimize), writing it, the checker
            "export_graph_seconds": t_graph - t0, "export_save_seconds": t_saved - t_graph,
            "export_check_seconds": done - t_saved, "opset": opset, "attention": attention, "fused_ops": fused_ops,
            "nodes": len(model.graph.node),
            "scatter_nodes": ops.get("ScatterND", 0), "op_counts": ops}
