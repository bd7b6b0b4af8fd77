"""Per-step inputs of the GroupQueryAttention graph: right-padded rows, each with its own length.

The harness hands prompts left-padded (every backend gets the same tensors); ORT's GroupQueryAttention wants each
row's tokens from slot 0 with its length in ``seqlens_k``. :meth:`RaggedCursor.begin` rolls every row left by its
padding, on the device. Decode inputs live in fixed buffers (fixed addresses, as CUDA-graph replay needs) that
advance in place on the device; only ``total_sequence_length`` is a host scalar (ORT reads it on the CPU to tell a
prompt from a decode step). A captured graph keeps whatever the kernels derived from that host value at capture
time, so with CUDA graphs decode steps pass a constant ``total_sequence_length`` = the cache length (true as an
upper bound for every row; the rows' real lengths come from ``seqlens_k`` on the device).
"""
from __future__ import annotations

import torch

from harness.sdk import StepBuffers


class RaggedCursor(StepBuffers):
    def __init__(self, device: str, max_batch: int, max_seq: int, constant_decode_total: bool = False):
        super().__init__(device, max_batch, max_seq)  # step_pos: each row's length so far = its next position
        self.constant_decode_total = constant_decode_total
        self.seqlens = torch.zeros(max_batch, dtype=torch.int32, device=device)  # seqlens_k of the next call
        self.total = torch.zeros((), dtype=torch.int32)  # host scalar: the longest row after the next call

    def begin(self, input_ids: torch.Tensor, prompt_lens: torch.Tensor | None):
        """Prefill inputs (ids [B, P] right-padded, positions [B, P], seqlens_k [B], total []) from left-padded ids."""
        batch, plen = input_ids.shape
        self.check_prefill(batch, plen)
        ids = input_ids.to(self.device)
        lens = torch.full((batch,), plen, dtype=torch.long, device=self.device) if prompt_lens is None \
            else prompt_lens.to(self.device).long()
        cols = torch.arange(plen, device=self.device)
        source = (cols.view(1, -1) + (plen - lens).view(-1, 1)) % plen  # row b's token j sits at j + pad_b
        ids = torch.gather(ids, 1, source).contiguous()
        positions = cols.expand(batch, plen).contiguous()
        seqlens = (lens - 1).to(torch.int32)
        self.batch, self.fill = batch, plen
        self.step_pos[:batch, 0].copy_(lens)
        self.seqlens[:batch].copy_(lens.to(torch.int32))
        self.total.fill_(self.max_seq if self.constant_decode_total else plen + 1)
        return ids, positions, seqlens, torch.tensor(plen, dtype=torch.int32)

    def step(self, tokens: torch.Tensor):
        """Decode inputs in the fixed buffers: (ids [B, 1], positions [B, 1], seqlens_k [B], total [])."""
        b = self.batch
        return self.step_tokens(tokens), self.step_pos[:b], self.seqlens[:b], self.total

    def advance(self) -> None:
        self.step_pos[: self.batch].add_(1)
        self.seqlens[: self.batch].add_(1)
        if not self.constant_decode_total:
            self.total.add_(1)
        self.fill += 1
