"""Backends that break the plugin contract, one way each; the contract tests (tests/test_plugin_contract.py)
install this package next to the built-in backends and check that each is reported and skipped, with a message
naming the plugin, the hook and the fix, and that the other backends still run."""
from dataclasses import dataclass

import torch

from harness.sdk import hookimpl


class Working:
    """A backend that meets the contract: logits from a fixed random projection of the last token (no model)."""

    @hookimpl
    def load(self, spec):
        self.vocab, self.device = spec.hf_config.vocab_size, spec.device
        self.table = torch.randn(self.vocab, self.vocab, generator=torch.Generator().manual_seed(0)).to(spec.device)
        return {}

    def logits(self, tokens):  # [B, T] -> [B, V]
        return self.table[tokens[:, -1]]

    @hookimpl
    def prefill(self, input_ids, prompt_lens):
        return self.logits(input_ids)

    @hookimpl
    def decode_step(self, tokens):
        return self.logits(tokens)

    @hookimpl
    def reset_kv(self):
        pass


class NeedsArguments(Working):
    def __init__(self, engine_path):
        self.engine_path = engine_path


class WrongArgumentNames(Working):
    @hookimpl
    def prefill(self, ids, prompt_lens):
        return self.logits(ids)


class MisspelledHook(Working):
    @hookimpl
    def decode_steps(self, tokens):
        return self.logits(tokens)


class UnmarkedHook:
    @hookimpl
    def load(self, spec):
        return {}

    @hookimpl
    def prefill(self, input_ids, prompt_lens):
        return None

    def decode_step(self, tokens):  # no @hookimpl: pluggy would never call it
        return None

    @hookimpl
    def reset_kv(self):
        pass


class WrongShape(Working):
    @hookimpl
    def prefill(self, input_ids, prompt_lens):
        return self.logits(input_ids)[:, None, :]  # [B, 1, V]: the whole (one-step) sequence, not [B, V]


class NumpyLogits(Working):
    @hookimpl
    def decode_step(self, tokens):
        return self.logits(tokens).cpu().numpy()


@dataclass
class ImpostorOptions:
    attention: str = "explicit"


class Impostor(Working):
    @hookimpl
    def enginebench_backend_options(self):
        return ImpostorOptions
