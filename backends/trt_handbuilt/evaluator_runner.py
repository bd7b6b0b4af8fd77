"""The hand-built network executed by the reference evaluator (torch, CPU): the same prefill / decode / reset
semantics as the engine, so ``task=validate device=cpu`` checks the network's numerics against HF."""
from __future__ import annotations

import torch

from backends.trt_common.evaluator import NetworkEvaluator
from harness.sdk import CacheCursor
from harness.sdk import head_dim as model_head_dim


class EvaluatorRunner:
    def __init__(self, trt, network, config, dtype: torch.dtype, max_batch: int, max_seq: int):
        self.evaluator = NetworkEvaluator(trt, network)
        head_dim = model_head_dim(config)
        shape = (max_batch, config.num_key_value_heads, max_seq, head_dim)
        self.caches = {f"past_{kind}_{i}": torch.zeros(shape, dtype=dtype)
                       for i in range(config.num_hidden_layers) for kind in ("key", "value")}
        self.max_seq = max_seq
        self.cursor = CacheCursor("cpu", max_batch, max_seq)

    def _run(self, ids, positions, slots) -> torch.Tensor:
        batch = ids.shape[0]
        inputs = {"input_ids": ids, "position_ids": positions, "cache_position": slots,
                  "write_index": slots[:1].to(torch.int32).expand(batch),
                  "attention_mask": self.cursor.mask(self.max_seq),
                  **{name: cache[:batch] for name, cache in self.caches.items()}}
        out = self.evaluator.run(inputs)
        for name, cache in self.caches.items():  # the engine updates in place; here the present is copied back
            cache[:batch].copy_(out[name.replace("past_", "present_")])
        return out["logits"]

    def prefill(self, input_ids, prompt_lens):
        return self._run(*self.cursor.begin(input_ids.cpu(), None if prompt_lens is None else prompt_lens.cpu()))

    def decode(self, tokens):
        logits = self._run(*self.cursor.step(tokens.cpu()))
        self.cursor.advance()
        return logits

    def reset(self) -> None:
        self.cursor.reset()
