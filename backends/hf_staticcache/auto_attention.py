"""``backend.attention=auto`` decides by measuring: every candidate that runs is timed on a real decode step of the
loaded model, at the grid's largest batch and at its shortest and longest fill, and the fastest wins.

Why measure: which kernel is fastest depends on the GPU, the fill and the batch. FlashAttention-4's Hopper kernel
has no split along the keys, so at an 8,192-token fill with one row it leaves most of the GPU idle (seen on an
H200: the Llama-3.2-1B step grew far more from a 128- to an 8,192-token fill than with PyTorch's FlashAttention-2,
which splits); a fixed preference order cannot know that. On the CPU the candidates are SDPA and eager.

What is timed: the decode step alone, outside every timed cell (during ``load``), with the static cache positioned
at a fill of F slots (the step attends over F keys, which is all a kernel's time depends on; the cache's contents
are zeros). On CUDA the step is captured as a CUDA graph first and replayed (``DecodeGraph``): the eager step of
a small model is bound by kernel launches, which would hide the attention kernels' differences, while the timed
cells run compiled or graphed. The timer is the instrument's own (``time_calls``): each candidate's time is the
device time per step of ``STEPS`` steps issued back to back after ``WARMUP`` untimed ones (fewer on the CPU,
where the steps are slow and the choice is between HF's own two implementations).

When the winners at the two fills differ, each cell uses the winner measured at the fill nearer to its own (on a
log scale: the boundary is the geometric mean of the two fills); the backend switches its attention (and so its
cache layout) between cells. Every candidate's time and the choice are recorded in ``backend_info``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.sdk import time_calls

WARMUP, STEPS = 3, 15  # on CUDA: graph replays of a few ms at most
CPU_WARMUP, CPU_STEPS = 1, 5


@dataclass
class Measured:
    batch: int
    fills: tuple[int, ...]  # (shortest, longest) decode fills of the grid, or one when they coincide
    ms: dict[str, dict[int, float]] = field(default_factory=dict)  # candidate -> fill -> ms per step

    def winner_at(self, fill: int) -> str:
        return min(self.ms, key=lambda choice: self.ms[choice][fill])

    def winners(self) -> dict[int, str]:
        return {fill: self.winner_at(fill) for fill in self.fills}

    def choice_for(self, prompt_len: int) -> str:
        """The winner at the measured fill nearest to ``prompt_len`` (log scale)."""
        nearest = min(self.fills, key=lambda fill: abs(math.log(fill) - math.log(max(prompt_len, 1))))
        return self.winner_at(nearest)

    def facts(self) -> dict:
        winners = self.winners()
        return {"attention_auto": {
            "rule": "fastest decode step (device time per step of several back to back, after warm-up) at the "
                    "largest batch and the shortest and longest fill; a cell uses the winner at the nearer fill "
                    "(log scale)",
            "batch": self.batch, "fills": list(self.fills),
            "decode_step_ms": {c: {str(f): round(t, 4) for f, t in by_fill.items()} for c, by_fill in self.ms.items()},
            "chosen": {str(f): c for f, c in winners.items()},
            "per_cell": len(set(winners.values())) > 1}}


def grid_extremes(spec) -> tuple[int, tuple[int, ...]]:
    """(largest batch, (shortest, longest) fill) of the grid the spec describes; outside a sweep, what the
    spec preallocates for. The longest fill is that of the last decode step of the longest cell."""
    batch = max(spec.batch_sizes) if spec.batch_sizes else spec.max_batch
    if spec.prompt_lens:
        short, long_ = min(spec.prompt_lens), max(spec.prompt_lens) + max(spec.new_tokens - 1, 0)
    else:
        short, long_ = spec.opt_prompt_len, spec.max_seq - 1
    short, long_ = max(1, min(short, spec.max_seq - 1)), max(1, min(long_, spec.max_seq - 1))
    return batch, tuple(sorted({short, long_}))


def time_decode_step(step: Callable[[], object], device: str) -> float:
    """Device ms per call of ``step()`` (one decode step at a fixed fill: it rewrites the same slot each time)."""
    warmup, steps = (WARMUP, STEPS) if device.startswith("cuda") else (CPU_WARMUP, CPU_STEPS)
    for _ in range(warmup):
        step()
    return time_calls(step, steps, device)["device_ms_per_call"]


def measure_candidates(candidates: list[str], batch: int, fills: tuple[int, ...],
                       step_at: Callable[[str, int], Callable[[], None]], device: str) -> Measured:
    """Time each candidate at each fill. ``step_at(choice, fill)`` sets the backend up for ``choice`` at ``batch``
    and returns a callable that runs one decode step at ``fill``."""
    result = Measured(batch, fills)
    for choice in candidates:
        result.ms[choice] = {}
        for fill in fills:
            result.ms[choice][fill] = time_decode_step(step_at(choice, fill), device)
    return result
