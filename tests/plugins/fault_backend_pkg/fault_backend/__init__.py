"""Fault injection for the reliability tests: the HF static-cache backend (real computation) plus faults at
chosen grid cells — out of memory, a real segfault, a hang, an exception in decode_step, NaN logits, slow steps,
steps that drift from one load to the next or jitter from one step to the next, a missing library, a hook that
calls sys.exit. The environment variable FAULT_BACKEND_SLOWDOWN (a factor, e.g. 1.5) scales every sleep: a slower
build of the same engine, under the same configuration label.

Cells are named "BxP" (batch x prompt length) and matched at prefill; "load" in crash_at / hang_at faults the load;
``error_at=["*"]`` fails every cell.
"""
import ctypes
import dataclasses
import os
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

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
    # Each load scales the sleep by 1 - load_drift, 1, 1 + load_drift in turn, counted in the file load_counter
    # (loads happen in different processes): run-to-run drift, the same cycle for every three loads.
    load_drift: float = 0.0
    load_counter: str = ""
    step_jitter: bool = False  # each step sleeps step_sleep_s times an exponential draw (mean 1): a jittery engine
    sleep_in_prefill: bool = False  # prefill sleeps like a decode step (its timing then drifts and jitters too)
    missing_library: bool = False  # load raises MissingLibrary
    exit_at: list[str] = field(default_factory=list)  # ... that call sys.exit(exit_code) ("load": the load)
    exit_code: int = 0
    pause_file: str = ""  # every prefill waits while this file exists (a run held mid-way, as long as a test needs)


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
        slowdown = float(os.environ.get("FAULT_BACKEND_SLOWDOWN", "1"))
        self.sleep_s = self.faults["step_sleep_s"] * self._drift_factor() * slowdown
        self.jitter = random.Random(0) if self.faults["step_jitter"] else None
        own = {f.name for f in fields(HFOptions)}
        hf_options = HFOptions(**{k: v for k, v in spec.options.items() if k in own})  # the HF backend's own
        return super().load(dataclasses.replace(spec, options=hf_options))

    def _sleep(self) -> None:
        if self.sleep_s:
            time.sleep(self.sleep_s * (self.jitter.expovariate(1.0) if self.jitter else 1.0))

    def _drift_factor(self) -> float:
        if not self.faults["load_drift"]:
            return 1.0
        counter = Path(self.faults["load_counter"])
        loads = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(loads + 1))
        return 1.0 + self.faults["load_drift"] * (-1, 0, 1)[loads % 3]

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
        while self.faults["pause_file"] and Path(self.faults["pause_file"]).exists():
            time.sleep(0.05)
        if self.faults["sleep_in_prefill"]:
            self._sleep()
        logits = super().prefill(input_ids, prompt_lens)
        return torch.full_like(logits, float("nan")) if self.faults["nan"] else logits

    @hookimpl
    def decode_step(self, tokens):
        if {getattr(self, "cell", None), "*"} & set(self.faults["error_at"]):  # "*": every cell
            raise RuntimeError(f"injected decode_step failure at cell {self.cell}")
        self._sleep()
        logits = super().decode_step(tokens)
        return torch.full_like(logits, float("nan")) if self.faults["nan"] else logits
