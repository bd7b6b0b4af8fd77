"""What the harness hands a backend's ``load`` hook: everything it needs to build or load and preallocate."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.model.quant import QuantScheme
from harness.model.sources import ModelSource
from harness.plugin.options import readable_options


@dataclass
class LoadSpec:
    model: ModelSource
    dtype: torch.dtype
    device: str
    # the backend's options (backend.*): an instance of its own options dataclass, also readable as a read-only
    # mapping (spec.options["threads"]) as before; a mapping given here becomes such an object too
    options: Any
    max_batch: int  # preallocate for this many rows ...
    max_seq: int  # ... and this many positions (prompt + new tokens of the largest cell)
    task: str = "benchmark"
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "enginebench")
    opt_batch: int = 1  # grid values that engines may tune for (TensorRT opt shapes)
    opt_prompt_len: int = 128
    quant: QuantScheme = field(default_factory=QuantScheme)  # weight-only scheme (model/quant.py); none by default
    # the grid itself, for engines that tune for its extremes (the HF backend's attention=auto); empty outside a sweep
    batch_sizes: tuple[int, ...] = ()
    prompt_lens: tuple[int, ...] = ()
    new_tokens: int = 0

    def __post_init__(self) -> None:
        self.options = readable_options(self.options)

    @property
    def hf_config(self):
        return self.model.config()
