"""Executing a static-KV-cache TensorRT engine (both TensorRT backends share it).

- One execution context per optimization profile (0 = prefill, 1 = decode), created once with user-managed device
  memory: both share one scratch buffer sized for the larger profile, so switching phase costs nothing.
- The KV cache is allocated once on the device. ``kv_mode="ping-pong"``: the graph's present outputs cannot alias
  its past inputs (an ONNX ScatterND writes a new tensor), so two buffer sets alternate each call; the cost is one
  full-cache write per call and twice the cache memory. ``kv_mode="in-place"``: the network updates its cache
  inputs itself (TensorRT's KV-cache-update layer) and present outputs are bound to the same addresses.
- ``execute_async_v3`` on a dedicated stream. Per-step inputs live at fixed addresses (``CacheCursor``), which is
  what CUDA-graph capture of decode steps needs; the capture itself is not implemented (so the TensorRT backends
  offer no ``cuda_graph`` option) because no machine here can run an engine to verify it.
This module needs an NVIDIA GPU that the installed TensorRT supports; none of the project's machines has one
(TensorRT-RTX refuses compute capability 9.0), so it is exercised by the ``trt_gpu`` tests only.
"""
from __future__ import annotations

from typing import Any

import torch

from harness.sdk import CacheCursor, UserError
from harness.sdk import head_dim as model_head_dim


class TrtStaticCacheRunner:
    def __init__(self, rt, engine_bytes: bytes, config, dtype: torch.dtype, device: str, max_batch: int,
                 max_seq: int, kv_mode: str = "ping-pong"):
        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise UserError("TensorRT engines execute on an NVIDIA GPU only",
                            "use device=cuda on a GPU machine, or task=build to build the engine here")
        trt = rt.trt
        self.trt, self.device, self.dtype, self.max_seq = trt, device, dtype, max_seq
        self.kv_mode = kv_mode
        self.runtime = trt.Runtime(rt.logger())
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise UserError(f"TensorRT {rt.flavour} {rt.version} cannot run this engine on "
                            f"{torch.cuda.get_device_name(device)}", "use a GPU this TensorRT supports")
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        self.contexts = [self.engine.create_execution_context(strategy) for _ in range(2)]
        scratch = max(self.engine.get_device_memory_size_for_profile_v2(p) for p in range(2))
        self.scratch = torch.empty(max(scratch, 1), dtype=torch.uint8, device=device)
        self.stream = torch.cuda.Stream(device=device)
        for p, ctx in enumerate(self.contexts):
            ctx.set_device_memory(self.scratch.data_ptr(), scratch)
            ctx.set_optimization_profile_async(p, self.stream.cuda_stream)
        layers = config.num_hidden_layers
        head_dim = model_head_dim(config)
        shape = (max_batch, config.num_key_value_heads, max_seq, head_dim)
        sets = 1 if kv_mode == "in-place" else 2
        self.caches = [[torch.zeros(shape, dtype=dtype, device=device) for _ in range(2 * layers)]
                       for _ in range(sets)]
        self.layers = layers
        self.logits = torch.empty(max_batch, config.vocab_size, dtype=dtype, device=device)
        self.cursor = CacheCursor(device, max_batch, max_seq)
        self.parity = 0
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.has_write_index = "write_index" in names

    def _run(self, profile: int, ids, pos, slots, batch: int, used: int) -> None:
        ctx = self.contexts[profile]
        mask = self.cursor.mask(used)
        self._mask_alive = mask
        src = self.caches[self.parity]
        dst = self.caches[0 if self.kv_mode == "in-place" else 1 - self.parity]
        tensors = {"input_ids": ids, "position_ids": pos, "cache_position": slots, "attention_mask": mask,
                   "logits": self.logits[:batch]}
        if self.has_write_index:  # the hand-built network's cache-update layer takes the first slot per row
            self._write_alive = slots[:1].to(torch.int32).expand(batch).contiguous()
            tensors["write_index"] = self._write_alive
            tensors["attention_mask"] = mask = self.cursor.mask(self.max_seq)  # [B, L]: L fixed in this network
            self._mask_alive = mask
        for i in range(self.layers):
            for j, kind in enumerate(("key", "value")):
                tensors[f"past_{kind}_{i}"] = src[2 * i + j][:batch]
                tensors[f"present_{kind}_{i}"] = dst[2 * i + j][:batch]
        for name, t in tensors.items():
            if self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
                ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        if self.kv_mode != "in-place":
            self.parity = 1 - self.parity

    def prefill(self, input_ids: torch.Tensor, prompt_lens: torch.Tensor | None) -> torch.Tensor:
        self.parity = 0
        ids, positions, slots = self.cursor.begin(input_ids, prompt_lens)
        batch, plen = ids.shape
        self._run(0, ids, positions, slots, batch, plen)
        return self.logits[:batch].clone()

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        ids, positions, slot = self.cursor.step(tokens)
        batch = ids.shape[0]
        self._run(1, ids, positions, slot, batch, self.cursor.fill + 1)
        self.cursor.advance()
        return self.logits[:batch].clone()

    def reset(self) -> None:
        self.cursor.reset()
        self.parity = 0

    def facts(self) -> dict[str, Any]:
        return {"kv_mode": self.kv_mode, "contexts": 2, "scratch_mib": self.scratch.numel() / (1 << 20)}
