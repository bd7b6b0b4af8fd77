"""The hand-built network executed by the reference evaluator (torch, CPU): the same prefill / decode / reset
semantics as the engine, so ``task=validate device=cpu`` checks the network's numerics against HF."""
from __future__ import annotations

import torch

from backends.trt_common.evaluator import NetworkEvaluator
from harness.errors import UserError


class EvaluatorRunner:
    def __init__(self, trt, network, config, dtype: torch.dtype, max_batch: int, max_seq: int):
        self.evaluator = NetworkEvaluator(trt, network)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.shape = (max_batch, config.num_key_value_heads, max_seq, head_dim)
        self.layers, self.dtype, self.max_seq = config.num_hidden_layers, dtype, max_seq
        self.caches = {f"past_{kind}_{i}": torch.zeros(self.shape, dtype=dtype)
                       for i in range(self.layers) for kind in ("key", "value")}
        self.batch = self.fill = 0

    def _run(self, ids, positions, slots) -> torch.Tensor:
        batch = ids.shape[0]
        inputs = {"input_ids": ids, "position_ids": positions, "cache_position": slots,
                  "write_index": torch.full((batch,), int(slots[0]), dtype=torch.int32),
                  "attention_mask": (torch.arange(self.max_seq).view(1, -1) >= self.pad).long(),
                  **{name: cache[:batch] for name, cache in self.caches.items()}}
        out = self.evaluator.run(inputs)
        for name, cache in self.caches.items():  # the engine updates in place; here the present is copied back
            cache[:batch].copy_(out[name.replace("past_", "present_")])
        return out["logits"]

    def prefill(self, input_ids, prompt_lens):
        batch, plen = input_ids.shape
        if batch > self.shape[0] or plen > self.max_seq:
            raise UserError(f"prefill of {batch}x{plen} exceeds the preallocated {self.shape[0]}x{self.max_seq}",
                            "raise the grid limits the backend was loaded for")
        ids = input_ids.cpu()
        self.pad = torch.zeros(batch, 1, dtype=torch.long) if prompt_lens is None \
            else (plen - prompt_lens.cpu()).view(batch, 1)
        positions = (torch.arange(plen).view(1, -1) - self.pad).clamp(min=0)
        self.batch, self.fill = batch, plen
        self.next_pos = positions[:, -1:] + 1
        return self._run(ids, positions, torch.arange(plen))

    def decode(self, tokens):
        if self.fill >= self.max_seq:
            raise UserError(f"decode past the preallocated {self.max_seq} positions",
                            "lower grid.prompt_lens + grid.new_tokens")
        logits = self._run(tokens.cpu(), self.next_pos, torch.tensor([self.fill]))
        self.next_pos = self.next_pos + 1
        self.fill += 1
        return logits

    def reset(self) -> None:
        self.fill = 0  # slots past the fill are masked, as in the engine
