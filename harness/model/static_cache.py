"""What every static-KV-cache graph runner tracks between calls, on the device: the rows' left padding, the next
position of each row, the next cache slot, and fixed per-step input buffers (fixed addresses, as CUDA graphs need).

Used by the ONNX Runtime runner, the TensorRT runtime and the hand-built network's evaluator runner, which differ
only in how they execute the graph; offered to every backend through :mod:`harness.sdk`.
"""
from __future__ import annotations

import torch

from harness import hookimpl
from harness.errors import UserError


class StepBuffers:
    """What every cursor shares: the preallocated limits, fixed token and position buffers, batch and fill."""

    def __init__(self, device: str, max_batch: int, max_seq: int):
        self.device, self.max_batch, self.max_seq = device, max_batch, max_seq
        self.step_ids = torch.zeros(max_batch, 1, dtype=torch.long, device=device)
        self.step_pos = torch.zeros(max_batch, 1, dtype=torch.long, device=device)  # next position per row
        self.batch = self.fill = 0  # fill: the longest row so far (the padded prompt length + steps)

    def check_prefill(self, batch: int, plen: int) -> None:
        if batch > self.max_batch or plen > self.max_seq:
            raise UserError(f"prefill of {batch}x{plen} exceeds the preallocated {self.max_batch}x{self.max_seq}",
                            "raise the grid limits the backend was loaded for")

    def step_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The decode tokens copied into the fixed buffer ([B, 1] view), after checking there is room."""
        if self.fill >= self.max_seq:
            raise UserError(f"decode past the preallocated {self.max_seq} positions",
                            "lower grid.prompt_lens + grid.new_tokens")
        self.step_ids[: self.batch].copy_(tokens)
        return self.step_ids[: self.batch]

    def reset(self) -> None:
        self.fill = 0  # slots past the fill are never attended to, and the next prefill rewrites from slot 0


class CacheCursor(StepBuffers):
    """All rows share one write slot; left padding is masked (the explicit-attention graphs)."""

    def __init__(self, device: str, max_batch: int, max_seq: int):
        super().__init__(device, max_batch, max_seq)
        self.step_slot = torch.zeros(1, dtype=torch.long, device=device)  # next cache slot
        self.cols = torch.arange(max_seq, device=device).view(1, -1)
        self.pad = torch.zeros(max_batch, 1, dtype=torch.long, device=device)  # left padding per row

    def begin(self, input_ids: torch.Tensor, prompt_lens: torch.Tensor | None):
        """Prefill inputs: (ids [B, P], positions [B, P], slots [P]); left-padded rows start at position 0."""
        batch, plen = input_ids.shape
        self.check_prefill(batch, plen)
        pad = torch.zeros(batch, 1, dtype=torch.long, device=self.device) if prompt_lens is None \
            else (plen - prompt_lens.to(self.device)).view(batch, 1)
        self.pad[:batch].copy_(pad)
        positions = (torch.arange(plen, device=self.device).view(1, -1) - pad).clamp(min=0).contiguous()
        self.batch, self.fill = batch, plen
        self.step_pos[:batch].copy_(positions[:, -1:] + 1)
        self.step_slot.fill_(plen)
        return input_ids.to(self.device).contiguous(), positions, torch.arange(plen, device=self.device)

    def step(self, tokens: torch.Tensor):
        """Decode inputs in the fixed buffers: (ids [B, 1], positions [B, 1], slot [1])."""
        return self.step_tokens(tokens), self.step_pos[: self.batch], self.step_slot

    def advance(self) -> None:
        """After a decode step: every row's position and the shared slot move on, on the device."""
        self.step_pos[: self.batch].add_(1)
        self.step_slot.add_(1)
        self.fill += 1

    def mask(self, used: int) -> torch.Tensor:
        """[B, used] int64: 1 where a slot holds a real token of the row (contiguous, for binding)."""
        return (self.cols[:, :used] >= self.pad[: self.batch]).long()


class RunnerHooks:
    """The four per-step hooks of a backend that delegates to a runner with prefill/decode/reset methods."""

    runner = None

    @hookimpl
    def prefill(self, input_ids, prompt_lens):
        return self.runner.prefill(input_ids, prompt_lens)

    @hookimpl
    def decode_step(self, tokens):
        return self.runner.decode(tokens)

    @hookimpl
    def reset_kv(self):
        self.runner.reset()
        return True

    @hookimpl
    def close(self):
        self.runner = None
