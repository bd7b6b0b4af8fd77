"""Backend ``trt-onnx-parsed``: the ONNX file that ONNX Runtime validates, parsed by TensorRT's OnnxParser into a
strongly typed engine with a prefill and a decode optimization profile; KV cache ping-ponged between two buffer
sets (ScatterND outputs cannot alias their inputs). ``task=build`` works on a machine without a GPU (TensorRT-RTX
builds ahead of time); running needs a GPU that the installed TensorRT supports.

Weight-only int8 / int4 (symmetric, per block or per channel) and fp8 (per channel) parse from the Q/DQ graph of
onnx_export/qdq.py: codes + ``DequantizeLinear`` feeding each MatMul, which TensorRT folds into the GEMM's weight
load. ONNX Runtime's MatMulNBits graph cannot serve: the parser imports ``com.microsoft.MatMulNBits`` only through
a plugin (which TensorRT-RTX does not ship) and only for fp16 activations (docs/quantization.md)."""
from __future__ import annotations

from typing import Any

from backends.trt_common.options import TrtOptions
from harness.sdk import RunnerHooks, UserError, hookimpl


def parse_onnx(onnx_path: str):
    def define(trt, builder, network):
        parser = trt.OnnxParser(network, trt.Logger(trt.Logger.WARNING))
        if not parser.parse_from_file(onnx_path):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
        return parser  # owns the parsed weights until the build returns

    return define


def check_parsed_scheme(quant) -> None:
    """What TensorRT's ONNX parser builds from the Q/DQ graph (measured with TensorRT-RTX 1.7: docs/quantization.md):
    int8 / int4 per block or per channel and fp8 per channel, all symmetric."""
    if quant.enabled and not quant.symmetric:
        raise UserError("TensorRT's ONNX parser refuses a non-zero DequantizeLinear zero point (asymmetric "
                        f"{quant.scheme})", "add quant_options.symmetric=true")


class TrtOnnxParsedBackend(RunnerHooks):
    @hookimpl
    def enginebench_backend_options(self) -> type:
        return TrtOptions

    @hookimpl
    def check_quant(self, quant, options, device) -> None:
        check_parsed_scheme(quant)

    @hookimpl
    def load(self, spec) -> dict[str, Any]:
        from backends.onnx_export.artifact import MODEL_FILE, onnx_artifact
        from backends.onnxruntime_backend.export_check import ort_export_check
        from backends.trt_common.engine import ENGINE_FILE, Profiles, engine_artifact
        from backends.trt_common.flavour import import_tensorrt

        rt = import_tensorrt(spec.options.flavour)
        onnx = onnx_artifact(spec, check=ort_export_check())  # checked by ORT where installed
        quant_facts = {}
        if spec.quant.enabled:
            from backends.onnx_export.qdq import qdq_onnx_artifact

            onnx = qdq_onnx_artifact(spec, onnx, spec.quant)
            quant_facts = {"quant_kernel": f"{spec.quant.scheme} initializers + DequantizeLinear (ONNX Q/DQ)",
                           "onnx_quant_reused": onnx.reused, "onnx_dequantize_nodes": onnx.meta["dequantize_nodes"]}
        spec.model.fingerprint()  # computed (and kept) while the weights are in memory ...
        spec.model.release()  # ... then the HF model goes: the TensorRT build needs the memory
        profiles = Profiles(spec.max_batch, spec.max_seq, min(spec.opt_batch, spec.max_batch),
                            min(spec.opt_prompt_len, spec.max_seq))
        engine = engine_artifact(spec, rt, "trt-onnx-parsed", {"onnx": onnx.meta["key"]},
                                 parse_onnx(str(onnx.directory / MODEL_FILE)), profiles)
        facts = {"flavour": rt.flavour, "trt_version": rt.version, "engine_reused": engine.reused,
                 "engine_build_seconds": round(engine.meta["engine_build_seconds"], 1),
                 "engine_mib": round(engine.meta["engine_bytes"] / (1 << 20), 1), "engine_dir": str(engine.directory),
                 **quant_facts}
        if spec.task == "build":
            return facts
        from backends.trt_common.runtime import TrtStaticCacheRunner

        self.runner = TrtStaticCacheRunner(rt, (engine.directory / ENGINE_FILE).read_bytes(), spec.hf_config,
                                           spec.dtype, spec.device, spec.max_batch, spec.max_seq,
                                           kv_mode="ping-pong")
        return {**facts, **self.runner.facts()}
