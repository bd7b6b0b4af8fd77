"""Backend ``hf-flashattn-staticcache``: the HF model with a preallocated ``StaticCache``, FlashAttention-2 when
the flash-attn package is importable, else SDPA (kernel selectable and probed), optional ``torch.compile`` of the
decode step (``reduce-overhead`` = CUDA graphs), and ``cache=dynamic`` as the stock-HF reference.

One static cache is allocated per batch size as the sweep reaches it (the sweep visits batch sizes in order and
the previous one is freed first); within a batch size ``reset_kv`` zeroes it in place.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from harness import hookimpl
from harness.errors import UserError
from harness.models import head_dim as model_head_dim

from backends.hf_staticcache.attention import (SDPA_CHOICES, first_kernel_that_runs, flash_attn_available,
                                                priority_order)

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
ATTENTION_CHOICES = ("auto", "flash_attention_2", "eager", *SDPA_CHOICES)


class HFStaticCacheBackend:
    name = "hf-flashattn-staticcache"

    def __init__(self) -> None:
        self.model, self.cache, self.cache_batch, self.device = None, None, None, "cpu"

    @hookimpl
    def enginebench_backend_defaults(self) -> dict[str, Any]:
        return {
            "attention": "auto",  # auto | flash_attention_2 | eager | flash | efficient | cudnn | math (SDPA kernels)
            "compile": "none",  # none | default | reduce-overhead (CUDA graphs) | max-autotune
            "cache": "static",  # static | dynamic (stock HF DynamicCache, reallocates: the reference)
        }

    @hookimpl
    def load(self, spec) -> dict[str, Any]:
        opts = spec.options
        self._check_options(opts)
        self.device, self.dtype = spec.device, spec.dtype
        self.max_seq, self.static = spec.max_seq, opts["cache"] == "static"
        attention = opts["attention"]
        if attention == "auto":
            attention = "flash_attention_2" if flash_attn_available() and spec.device.startswith("cuda") else "sdpa"
        elif attention == "flash_attention_2" and not flash_attn_available():
            raise UserError("attention=flash_attention_2 needs the flash-attn package",
                            "pip install flash-attn, or use backend.attention=auto")
        self.sdpa_only = SDPA_CHOICES.get(attention)
        impl = "sdpa" if attention in SDPA_CHOICES or attention == "sdpa" else attention
        self.model = spec.model.build(spec.dtype, spec.device, attn_implementation=impl)
        self.config = self.model.config
        self.cache, self.cache_batch = None, None
        self.decode_fn = self._forward_decode
        if opts["compile"] != "none":
            # Compile the decode step only (gpt-fast style): prefill shapes change per cell.
            self.decode_fn = torch.compile(self._forward_decode, mode=opts["compile"], fullgraph=False)
        info = {"attn_implementation": impl, "compile": opts["compile"], "cache": opts["cache"]}
        if impl == "sdpa":
            info.update(self._probe_sdpa_kernels())
        else:
            info["attention_kernel_prefill"] = info["attention_kernel_decode"] = impl
        return info

    def _check_options(self, opts: dict[str, Any]) -> None:
        if opts["compile"] not in COMPILE_MODES:
            raise UserError(f"unknown backend.compile '{opts['compile']}'", f"use one of {', '.join(COMPILE_MODES)}")
        if opts["attention"] not in ATTENTION_CHOICES:
            raise UserError(f"unknown backend.attention '{opts['attention']}'",
                            f"use one of {', '.join(ATTENTION_CHOICES)}")
        if opts["cache"] not in ("static", "dynamic"):
            raise UserError(f"unknown backend.cache '{opts['cache']}'", "use backend.cache=static or dynamic")

    def _sdpa_context(self):
        from torch.nn.attention import sdpa_kernel

        return sdpa_kernel([self.sdpa_only]) if self.sdpa_only is not None else contextlib.nullcontext()

    def _probe_sdpa_kernels(self) -> dict[str, str]:
        """Run a real 2-row prefill and decode step under each SDPA kernel alone (see attention.py)."""
        candidates = [self.sdpa_only] if self.sdpa_only is not None else priority_order()
        ids = torch.ones(2, 4, dtype=torch.long, device=self.device)
        results = {}

        def run_prefill():
            self.reset_kv()
            self._prefill_eager(ids, None)

        results["attention_kernel_prefill"] = first_kernel_that_runs(run_prefill, candidates, self.device)

        def run_decode():
            self.reset_kv()
            self._prefill_eager(ids, None)
            self._forward_decode(ids[:, :1], self.positions, self.mask)

        results["attention_kernel_decode"] = first_kernel_that_runs(run_decode, candidates, self.device)
        self._free_cache()
        if "none" in results.values():
            raise UserError(f"no SDPA kernel among {[c.name for c in candidates]} runs this model here",
                            "use backend.attention=auto")
        return results

    def _free_cache(self) -> None:
        self.cache, self.cache_batch = None, None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _ensure_cache(self, batch: int) -> None:
        from transformers import DynamicCache, StaticCache

        if not self.static:
            self.cache = DynamicCache()
            return
        if self.cache_batch == batch:
            return
        self._free_cache()
        cfg = self.config
        head_dim = model_head_dim(cfg)
        self.cache = StaticCache(config=cfg, max_cache_len=self.max_seq)
        self.cache.early_initialization(batch_size=batch, num_heads=cfg.num_key_value_heads, head_dim=head_dim,
                                        dtype=self.dtype, device=torch.device(self.device))
        self.cache_batch = batch

    @torch.no_grad()
    def _prefill_eager(self, input_ids: torch.Tensor, prompt_lens: torch.Tensor | None) -> torch.Tensor:
        batch, plen = input_ids.shape
        self._ensure_cache(batch)
        if prompt_lens is None:
            pad = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
            self.mask = None
        else:
            pad = (plen - prompt_lens.to(self.device)).view(batch, 1)
            width = self.max_seq if self.static else plen
            cols = torch.arange(width, device=self.device).view(1, -1)
            self.mask = (cols >= pad).long()  # [B, max_seq]: left padding is never attended to
        positions = (torch.arange(plen, device=self.device).view(1, -1) - pad).clamp(min=0)  # [B, P]
        with self._sdpa_context():
            out = self.model(input_ids=input_ids, attention_mask=self.mask, position_ids=positions,
                             past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.positions = positions[:, -1:] + 1  # [B, 1] position of the next token, advanced in place
        return out.logits[:, -1]

    def _forward_decode(self, tokens, positions, mask):
        with self._sdpa_context():
            out = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                             past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1]

    @hookimpl
    def prefill(self, input_ids, prompt_lens):
        return self._prefill_eager(input_ids, prompt_lens)

    @hookimpl
    @torch.no_grad()
    def decode_step(self, tokens):
        if not self.static and self.mask is not None:
            self.mask = torch.nn.functional.pad(self.mask, (0, 1), value=1)
        logits = self.decode_fn(tokens, self.positions, self.mask)
        if self.decode_fn is not self._forward_decode:
            logits = logits.clone()  # CUDA-graph outputs are overwritten by the next replay
        self.positions.add_(1)
        return logits

    @hookimpl
    def reset_kv(self):
        if self.cache is not None:
            if self.static:
                self.cache.reset()  # zeroes the preallocated tensors in place
            else:
                self.cache = None  # the stock-HF reference: a new DynamicCache per request
        return True

    @hookimpl
    def close(self):
        self._free_cache()
        self.model = None
