"""Timing of hook calls: CUDA events on GPU (no host sync inside the timed region), perf_counter on CPU.

A :class:`StepTimer` hands out marks; ``mark()`` records a CUDA event on the current stream (or reads perf_counter
after nothing: CPU ops are synchronous), and ``elapsed_ms(a, b)`` is read once the iteration is over, after one
synchronisation, so the timed region itself never waits on the host.
"""
from __future__ import annotations

import time

import torch


class StepTimer:
    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self._marks: list = []

    def start(self) -> None:
        self._marks.clear()

    def mark(self) -> int:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())
        return len(self._marks) - 1

    def finish(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def elapsed_ms(self, a: int, b: int) -> float:
        if self.cuda:
            return float(self._marks[a].elapsed_time(self._marks[b]))
        return (self._marks[b] - self._marks[a]) * 1e3


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
