"""Backend ``onnxruntime``: our static-KV-cache ONNX export run by ONNX Runtime (CUDA EP on GPU, CPU EP otherwise)
with I/O binding and the cache updated in place; attention written out or as ORT's fused GroupQueryAttention
(optionally with ORT's other fused ops: fused.py); optional CUDA-graph replay of decode steps (GroupQueryAttention
graph only); weight-only int8/int4 through ONNX Runtime's MatMulNBits quantizer (onnx_export/quantize.py)."""
from __future__ import annotations

import contextlib
import os
from typing import Any

from backends.onnxruntime_backend.options import OrtOptions
from harness.sdk import RunnerHooks, UserError, attention_reads, hookimpl
from harness.sdk import head_dim as model_head_dim

FPA_INTB_ENV = "ORT_FPA_INTB_GEMM"  # ONNX Runtime's switch for MatMulNBits' CUTLASS fpA_intB path (CUDA EP)


@contextlib.contextmanager
def nbits_kernel_env(kernel: str):
    """``fpa_intb``: set ORT_FPA_INTB_GEMM=1 while the session is created (its kernels read it then), and put the
    variable back as it was afterwards."""
    if kernel != "fpa_intb":
        yield
        return
    before = os.environ.get(FPA_INTB_ENV)
    os.environ[FPA_INTB_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FPA_INTB_ENV, None)
        else:
            os.environ[FPA_INTB_ENV] = before


# ONNX op types the name rule would misread (harness/profile/categories.py): our graphs' fused ops by what they do
ORT_CATEGORIES = {"GroupQueryAttention": "attention", "MultiHeadAttention": "attention", "Attention": "attention",
                  "RotaryEmbedding": "norm_elementwise", "SkipSimplifiedLayerNormalization": "norm_elementwise",
                  "SimplifiedLayerNormalization": "norm_elementwise", "MatMulNBits": "gemm", "MatMul": "gemm",
                  "Gemm": "gemm", "ScatterND": "copy"}


class OnnxRuntimeBackend(RunnerHooks):
    @hookimpl
    def enginebench_backend_options(self) -> type:
        return OrtOptions

    @hookimpl
    def check_quant(self, quant, options, device) -> None:
        from backends.onnx_export.quantize import check_ort_scheme

        check_ort_scheme(quant)

    @hookimpl
    def load(self, spec) -> dict[str, Any]:
        from backends.onnx_export.artifact import MODEL_FILE, onnx_artifact
        from backends.onnx_export.graph import check_gqa_head_size
        from backends.onnxruntime_backend.export_check import check_against_hf
        from backends.onnxruntime_backend.runner import (
            OrtStaticCacheRunner,
            check_graph_dtype,
            import_ort,
            resolve_provider,
        )

        import_ort()  # a missing library is reported before any export work
        opts: OrtOptions = spec.options
        if not spec.quant.enabled and (opts.nbits_accuracy_level or opts.nbits_kernel != "default"):
            raise UserError("backend.nbits_accuracy_level / nbits_kernel apply to quant=int8|int4 (MatMulNBits)",
                            "drop them or use quant=int4")
        # attention, fused_ops and cuda_graph were checked with every job's options (options.py); what depends on
        # the device and the model is said here, before the export
        provider = resolve_provider(opts.provider, spec.device, opts.cuda_graph)
        check_graph_dtype(opts.attention, provider, spec.dtype)
        check_gqa_head_size(opts.attention, model_head_dim(spec.hf_config))
        artifact = onnx_artifact(spec, opts.attention, opts.fused_ops, check_against_hf)
        quant_facts = {}
        if spec.quant.enabled:
            from backends.onnx_export.quantize import quantized_onnx_artifact

            artifact = quantized_onnx_artifact(spec, artifact, spec.quant, opts.nbits_accuracy_level)
            quant_facts = {"quant_kernel": "MatMulNBits", "onnx_quant_reused": artifact.reused,
                           "onnx_matmulnbits_nodes": artifact.meta["matmulnbits_nodes"],
                           "nbits_accuracy_level": opts.nbits_accuracy_level, "nbits_kernel": opts.nbits_kernel}
        with nbits_kernel_env(opts.nbits_kernel):  # read by MatMulNBits' CUDA kernels when the session is made
            self.runner = OrtStaticCacheRunner(str(artifact.directory / MODEL_FILE), spec.hf_config, spec.dtype,
                                               spec.device, spec.max_batch, provider=opts.provider,
                                               opt_level=opts.graph_optimization, cuda_graph=opts.cuda_graph)
        # GroupQueryAttention reads each row up to its length; the explicit MatMul/Softmax graph reads the whole
        # static cache. MatMulNBits packs its zero points at the code width.
        reads = attention_reads("filled" if opts.attention == "gqa" else "allocated", self.runner.max_seq,
                                spec.quant.bits if spec.quant.enabled and not spec.quant.symmetric else None)
        return {**self.runner.facts(), **quant_facts, **reads, "onnx_reused": artifact.reused,
                "onnx_fused_ops": artifact.meta.get("fused_ops", False), "onnx_nodes": artifact.meta["nodes"],
                "onnx_export_seconds": round(artifact.meta["export_seconds"], 2),
                # how the graph was exported (onnx_export/layerwise.py) and where its seconds went: the graph
                # (trace, translate, optimize), writing it, the checker; artifacts built before say nothing
                "onnx_export_method": artifact.meta.get("export_method"),
                "onnx_export_parts_seconds": {part: round(artifact.meta[f"export_{part}_seconds"], 2)
                                              for part in ("graph", "save", "check")
                                              if f"export_{part}_seconds" in artifact.meta} or None,
                # the whole build of the artifact (model, export, check against HF); a reused artifact cost none
                "onnx_build_seconds": round(artifact.meta["build_seconds"], 2) if "build_seconds" in artifact.meta
                else None,
                "onnx_check_max_abs_diff": artifact.meta["check"]["max_abs_diff"], "onnx_dir": str(artifact.directory)}

    @hookimpl
    def profile_kernels(self, run, trace_path) -> list[dict[str, Any]] | None:
        # CUPTI sees the CUDA EP's kernels through torch.profiler; only the CPU EP needs ORT's own profiler
        return None if self.runner.cuda else self.runner.profiled_on_cpu(run, trace_path)

    @hookimpl
    def kernel_category(self, name) -> str | None:
        return ORT_CATEGORIES.get(name)

