"""An example third-party backend package: runs the HF model with no KV cache at all, re-running the whole
sequence every step. Slow on purpose; it shows everything a plugin needs: an entry point, typed options and the
five hooks."""
from dataclasses import dataclass

import torch

from harness.sdk import choice, hookimpl


@dataclass
class ToyOptions:
    label: str = "toy"  # any text, recorded in backend_info
    recompute: str = choice("everything")  # the only way this toy works (an option with allowed values)


class ToyNoCacheBackend:
    @hookimpl
    def enginebench_backend_options(self):
        return ToyOptions

    @hookimpl
    def load(self, spec):
        self.model = spec.model.build(spec.dtype, spec.device, attn_implementation="eager")
        self.ids = None
        return {"label": spec.options["label"]}

    def _last_logits(self):
        mask = (torch.arange(self.ids.shape[1], device=self.ids.device)[None] >= self.pad[:, None]).long()
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        with torch.no_grad():
            out = self.model(input_ids=self.ids, attention_mask=mask, position_ids=positions, use_cache=False)
        return out.logits[:, -1]

    @hookimpl
    def prefill(self, input_ids, prompt_lens):
        self.ids = input_ids
        width = input_ids.shape[1]
        self.pad = torch.zeros_like(input_ids[:, 0]) if prompt_lens is None else width - prompt_lens
        return self._last_logits()

    @hookimpl
    def decode_step(self, tokens):
        self.ids = torch.cat([self.ids, tokens], dim=1)
        return self._last_logits()

    @hookimpl
    def reset_kv(self):  # returns nothing: the return value of reset_kv is ignored
        self.ids = None

    @hookimpl
    def close(self):
        self.model = None
