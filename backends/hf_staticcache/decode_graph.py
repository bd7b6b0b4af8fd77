"""The decode step captured as a CUDA graph by hand (``backend.cuda_graph=true``; the compiled step with compile).

One graph per batch size. Its first step runs eagerly (lazy initialisation, FlashAttention-4's JIT compile and
cuBLAS handles happen outside the capture, and its logits are that step's real answer); the step is then captured
(capture records, it does not execute) and every later step is one replay. Everything the step reads lives at a
fixed address: the token buffer here, the backend's position/slot buffers, mask and FillState, the static cache.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


class DecodeGraph:
    def __init__(self, step: Callable[[torch.Tensor], torch.Tensor], batch: int, device: str):
        self.step = step  # step(tokens [B, 1]) -> logits [B, V]
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        if self.graph is None:
            logits = self.step(self.tokens)
            self._capture()
            return logits
        self.graph.replay()
        return self.logits.clone()  # the graph's output buffer is overwritten by the next replay

    def _capture(self) -> None:
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self.step(self.tokens)
        self.graph = graph
