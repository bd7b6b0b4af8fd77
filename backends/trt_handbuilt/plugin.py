"""Backend ``trt-handbuilt``: the network of network.py, built into a TensorRT engine (GPU) or executed by the
reference evaluator (``backend.mode=evaluator``, the default on CPU), which reads the network definition back
through the TensorRT API and computes it with torch. The KV cache is updated in place by the cache-update layer."""
from __future__ import annotations

from typing import Any

from backends.trt_handbuilt.options import HandbuiltOptions
from harness.sdk import RunnerHooks, UserError, hookimpl

NETWORK_VERSION = 3  # bump when network.py changes what it builds


class TrtHandbuiltBackend(RunnerHooks):
    @hookimpl
    def enginebench_backend_options(self) -> type:
        return HandbuiltOptions

    @hookimpl
    def check_quant(self, quant, options, device) -> None:
        from backends.trt_handbuilt.network import check_quant_scheme

        check_quant_scheme(quant)

    @hookimpl
    def load(self, spec) -> dict[str, Any]:
        from backends.trt_common.flavour import import_tensorrt
        from backends.trt_handbuilt.network import NetworkOptions, define_llama

        opts: HandbuiltOptions = spec.options
        rt = import_tensorrt(opts.flavour)
        mode = opts.mode
        if mode == "auto":
            mode = "engine" if spec.device.startswith("cuda") or spec.task == "build" else "evaluator"
        options = NetworkOptions(dtype=spec.dtype, max_seq=spec.max_seq, fuse_qkv=opts.fuse_qkv,
                                 attention=opts.attention, quant=spec.quant)
        import torch

        # float32: the cached reference model itself (the network only reads its weights): no extra copy
        model = spec.model.build_fp32_cpu() if spec.dtype == torch.float32 else spec.model.build(spec.dtype, "cpu")
        facts = {"flavour": rt.flavour, "trt_version": rt.version, "mode": mode, "fuse_qkv": options.fuse_qkv,
                 "attention": options.attention, "kv_mode": "in-place (KV-cache-update layer)"}
        if spec.quant.enabled:
            facts["quant_kernel"] = "int8/fp8 constants + IDequantizeLayer"
        if mode == "evaluator":
            if spec.device != "cpu":
                raise UserError("backend.mode=evaluator runs on the CPU", "add device=cpu")
            from backends.trt_handbuilt.evaluator_runner import EvaluatorRunner

            builder = rt.trt.Builder(rt.logger())
            self.network = builder.create_network(1 << int(rt.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
            self._keep = (builder, define_llama(rt.trt, self.network, model, options))
            self.runner = EvaluatorRunner(rt.trt, self.network, spec.hf_config, spec.dtype, spec.max_batch,
                                          spec.max_seq)
            # labelled as what it is: the reference evaluator computing the network with torch, not TensorRT
            resolved = {"resolved_options": {"mode": "evaluator"}} if opts.mode == "auto" else {}
            return {**facts, **resolved, "layers": self.network.num_layers,
                    "layer_types": ",".join(t.split(".")[-1] for t in self.runner.evaluator.layer_types)}
        from backends.trt_common.engine import ENGINE_FILE, Profiles, engine_artifact

        profiles = Profiles(spec.max_batch, spec.max_seq, min(spec.opt_batch, spec.max_batch),
                            min(spec.opt_prompt_len, spec.max_seq))
        source = {"model": spec.model.fingerprint(), "network_version": NETWORK_VERSION, "dtype": str(spec.dtype),
                  "max_seq": spec.max_seq, "fuse_qkv": options.fuse_qkv, "attention": options.attention,
                  "quant": spec.quant.as_dict()}
        engine = engine_artifact(spec, rt, "trt-handbuilt", source,
                                 lambda trt, builder, network: define_llama(trt, network, model, options), profiles)
        facts.update({"engine_reused": engine.reused,
                      "engine_build_seconds": round(engine.meta["engine_build_seconds"], 1),
                      "engine_mib": round(engine.meta["engine_bytes"] / (1 << 20), 1),
                      "engine_dir": str(engine.directory)})
        if spec.task == "build":
            return facts
        from backends.trt_common.runtime import TrtStaticCacheRunner

        self.runner = TrtStaticCacheRunner(rt, (engine.directory / ENGINE_FILE).read_bytes(), spec.hf_config,
                                           spec.dtype, spec.device, spec.max_batch, spec.max_seq,
                                           kv_mode="in-place")
        return {**facts, **self.runner.facts()}
