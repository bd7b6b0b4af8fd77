"""Fault injection for the reliability tests: the HF static-cache backend (real computation) plus faults at
chosen grid cells — out of memory, a real segfault, a hang, an exception in decode_step, NaN logits, slow steps,
a missing library, a hook that calls sys.exit.

Cells are named "BxP" (batch x prompt length) and matched at prefill; "load" in crash_at / hang_at faults the load;
``error_at=["*"]`` fails every cell.
"""
import ctypes
import sys
import time
from dataclasses import dataclass, field, fields

import torch

from backends.hf_staticcache.options import HFOptions
from backends.hf_staticcache.plugin import HFStaticCacheBackend
from harness.sdk import MissingLibrary, hookimpl


@dataclass
class FaultOptions(HFOptions):
    oom_at: list[str] = field(default_factory=list)  # cells "BxP" that raise out-of-memory at prefill
    crash_at: list[str] = field(default_factory=list)  # ... that segfault
    hang_at: list[str] = field(default_factory=list)  # ... that hang ("load" in crash_at / hang_at: the load)
    error_at: list[str] = field(default_factory=list)  # ... whose decode_step raises ("*": every cell)
    nan: bool = False  # every logit NaN
    step_sleep_s: float = 0.0  # a sleep in every decode step
    missing_library: bool = False  # load raises MissingLibrary
    exit_at: list[str] = field(default_factory=list)  # ... that call sys.exit(exit_code) ("load": the load)
    exit_code: int = 0


class FaultBackend(HFStaticCacheBackend):
    @hookimpl
    def enginebench_backend_options(self):
        return FaultOptions

    @hookimpl
    def load(self, spec):
        self.faults = spec.options
        if "load" in self.faults["crash_at"]:
            ctypes.string_at(0)
        if "load" in self.faults["hang_at"]:
            time.sleep(3600)
        if "load" in self.faults["exit_at"]:
            sys.exit(self.faults["exit_code"])
        if self.faults["missing_library"]:
            raise MissingLibrary("fault", "fault_native_lib", "fault-native-lib")
        own = {f.name for f in fields(HFOptions)}
        spec.options = {k: v for k, v in spec.options.items() if k in own}  # the HF backend's own options
        return super().load(spec)

    @hookimpl
    def prefill(self, input_ids, prompt_lens):
        cell = f"{input_ids.shape[0]}x{input_ids.shape[1]}"
        if cell in self.faults["oom_at"]:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected at cell {cell})")
        if cell in self.faults["crash_at"]:
            ctypes.string_at(0)  # a real segmentation fault inside native code
        if cell in self.faults["hang_at"]:
            time.sleep(3600)
        if cell in self.faults["exit_at"]:
            sys.exit(self.faults["exit_code"])
        self.cell = cell
        logits = super().prefill(input_ids, prompt_lens)
        return torch.full_like(logits, float("nan")) if self.faults["nan"] else logits

    @hookimpl
    def decode_step(self, tokens):
        if {getattr(self, "cell", None), "*"} & set(self.faults["error_at"]):  # "*": every cell
            raise RuntimeError(f"injected decode_step failure at cell {self.cell}")
        if self.faults["step_sleep_s"]:
            time.sleep(self.faults["step_sleep_s"])
        logits = super().decode_step(tokens)
        return torch.full_like(logits, float("nan")) if self.faults["nan"] else logits
