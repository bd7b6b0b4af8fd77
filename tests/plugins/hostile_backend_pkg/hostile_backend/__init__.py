"""Backends whose hooks work but whose option declarations cannot become a config: each must cost only the
commands that select it (tests/test_hostile_plugins.py)."""
from dataclasses import dataclass

import torch

from harness.sdk import hookimpl


class Working:
    """Logits from a fixed random projection of the last token (no model)."""

    @hookimpl
    def load(self, spec):
        vocab = spec.hf_config.vocab_size
        self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)).to(spec.device)
        return {}

    @hookimpl
    def prefill(self, input_ids, prompt_lens):
        return self.table[input_ids[:, -1]]

    @hookimpl
    def decode_step(self, tokens):
        return self.table[tokens[:, -1]]

    @hookimpl
    def reset_kv(self):
        pass


class NotADataclass:
    threads = 4


class OptionsNotADataclass(Working):
    @hookimpl
    def enginebench_backend_options(self):
        return NotADataclass


@dataclass
class Fine:
    threads: int = 4


class OptionsAnInstance(Working):
    @hookimpl
    def enginebench_backend_options(self):
        return Fine()  # an instance, not the class


class DefaultsHoldAnObject(Working):
    @hookimpl
    def enginebench_backend_defaults(self):
        return {"threads": 4, "session": object()}  # not a plain value


_LEAKED = []  # what LeaksMemory never gives back


class LeaksMemory(Working):
    """Keeps 256 MiB of host memory alive after close: it must not be charged to the backend measured next."""

    @hookimpl
    def load(self, spec):
        _LEAKED.append(torch.ones(64 << 20))  # 64 Mi float32 = 256 MiB, touched
        return super().load(spec)
