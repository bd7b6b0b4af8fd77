"""Backend ``hf-flashattn-staticcache``: the HF model with a preallocated ``StaticCache`` and a choice of attention.

``backend.attention``: ``flash_attention_2`` (flash-attn 2.x), ``flash_attention_4`` (flash-attn-4's CuTe kernels),
``torch_flash`` (PyTorch's own FlashAttention-2 kernel) attend over the static cache reading only each row's filled
slots (static_attention.py); ``sdpa`` (kernel probed, or forced: flash | efficient | cudnn | math) and ``eager`` are
HF's own, with a mask over the whole cache. ``auto`` probes the candidates on the loaded model (the FlashAttention
choices and SDPA on CUDA, SDPA and eager on the CPU), times a decode step of each that runs at the grid's extremes
and keeps the fastest (auto_attention.py); ``backend_info`` records every time, the choice, and what ran for
prefill and decode. ``backend.compile`` compiles the decode step (compile_step.py: ``reduce-overhead`` = CUDA
graphs, ``max-autotune`` = CUDA graphs + autotuning + one full graph, Inductor's caches in the artifact cache);
``backend.cuda_graph=true`` captures the decode step as a CUDA graph by hand (decode_graph.py), the compiled one
with ``compile=default|max-autotune``: the per-token work (the fill counter, the step, the position counters) is
one replay.
``cache=dynamic`` is the stock-HF reference. ``quant=int8|int4|fp8`` quantizes the decoder linears' weights with
torchao (quantize.py) before any compilation or capture.

One static cache is allocated per batch size as the sweep reaches it (the sweep visits batch sizes in order and
the previous one is freed first); within a batch size ``reset_kv`` zeroes it in place.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch

from backends.hf_staticcache.attention import (
    SDPA_CHOICES,
    first_kernel_that_runs,
    priority_order,
)
from backends.hf_staticcache.auto_attention import Measured, grid_extremes, measure_candidates
from backends.hf_staticcache.compile_step import CompiledStep, decode_graph_kind, use_inductor_cache
from backends.hf_staticcache.decode_graph import DecodeGraph
from backends.hf_staticcache.flash_packages import installed_flash_attn
from backends.hf_staticcache.options import HFOptions
from backends.hf_staticcache.selection import (
    FLASH_CHOICES,
    candidates,
    check_choice,
    flash_problem,
)
from backends.hf_staticcache.static_attention import (
    HF_NAMES,
    FillState,
    register_attention_functions,
    use_token_major_storage,
)
from harness.sdk import UserError, attention_reads, cache_keyword, hookimpl, plain_attention_problem, say
from harness.sdk import head_dim as model_head_dim

KERNEL_DETAIL = {
    "flash_attention_2": "flash_attn.flash_attn_with_kvcache (cache_leftpad, cache_seqlens)",
    "flash_attention_4": "flash_attn.cute.flash_attn_varlen_func (cu_seqlens_k, seqused_k; split-KV on Blackwell only)",
    "torch_flash": "torch.ops.aten._flash_attention_forward (varlen, seqused_k)",
}


class HFStaticCacheBackend:
    name = "hf-flashattn-staticcache"

    def __init__(self) -> None:
        self.model, self.cache, self.cache_batch, self.device = None, None, None, "cpu"
        self.fill, self.graphs, self.flash = None, {}, None
        self.choice, self.measured = None, None  # the attention choice in use; auto's measurements (Measured)

    @hookimpl
    def enginebench_backend_options(self) -> type:
        return HFOptions

    @hookimpl
    def check_quant(self, quant, options, device) -> None:
        from backends.hf_staticcache.quantize import choose_config

        # torchao present, fp8 only where the GPU has it, the chosen int4 kernel installed (its dtype: in load)
        choose_config(quant, device, None, options.get("int4_kernel", "tinygemm"))

    @hookimpl
    def load(self, spec) -> dict[str, Any]:
        opts: HFOptions = spec.options  # the backend's own options dataclass (harness/options.py)
        # FlashAttention choices compute plain causal softmax over the cache: anything else is refused or skipped
        self.attention_problem = plain_attention_problem(spec.model.config(), spec.max_seq)
        if opts.attention in FLASH_CHOICES and self.attention_problem:
            raise UserError(f"backend.attention={opts.attention} computes plain causal attention; this model has "
                            f"{self.attention_problem}", "use backend.attention=sdpa (or auto)")
        self._check_options(opts, spec)
        self.device, self.dtype = spec.device, spec.dtype
        self.max_seq, self.static = spec.max_seq, opts.cache == "static"
        self.cuda_graph = bool(opts.cuda_graph)
        register_attention_functions()
        todo = candidates(opts.attention, spec.device) if self.static else ["sdpa"]
        self.model = spec.model.build(spec.dtype, spec.device)
        self.cache_kw = cache_keyword(self.model)  # transformers 5.2x: cache=; 5.17: past_key_values=
        self.config = self.model.config
        self.takes_cache_position = "cache_position" in inspect.signature(self.model.forward).parameters
        from backends.hf_staticcache.quantize import quantize_model

        quant_facts = quantize_model(self.model, spec.quant, spec.device, spec.dtype, opts.int4_kernel)
        self.cache, self.cache_batch = None, None
        info = {"compile": opts.compile, "cache": opts.cache, "cuda_graph": self.cuda_graph,
                "decode_graph": decode_graph_kind(opts.compile, self.cuda_graph),
                "static_cache_len": spec.max_seq, **quant_facts}
        info.update(self._choose_attention(todo, opts.attention, spec))
        # FlashAttention choices are told each row's length; SDPA and eager mask a static cache, reading every slot.
        # torchao's int4 layout keeps its zero points in the activation dtype: the default count. (With auto's
        # choice per cell, this is the first cell's choice.)
        info.update(attention_reads("filled" if self.flash or not self.static else "allocated", self.max_seq))
        self.decode_fn = self._forward_decode
        if opts.compile != "none":
            # Compile the decode step only (gpt-fast style): prefill shapes change per cell.
            info["inductor_cache_dir"] = use_inductor_cache(spec.cache_dir)
            key = (f"hf-compile:{spec.model.name}:{opts.compile}{':graph' if self.cuda_graph else ''}:{self.impl}:"
                   f"{spec.quant.label}:{spec.max_seq}")
            self.decode_fn = CompiledStep(self._forward_decode, opts.compile, spec.cache_dir, key,
                                          hand_captured=self.cuda_graph)
            info["compile_seconds"] = self.decode_fn.compiled  # filled at each batch size's first step
        return info

    def _check_options(self, opts: HFOptions, spec) -> None:
        """What depends on this machine; the values themselves were checked with every job's options (options.py)."""
        check_choice(opts.attention, spec.device, spec.dtype)
        if opts.int4_kernel != "tinygemm" and spec.quant.scheme != "int4":
            raise UserError(f"backend.int4_kernel={opts.int4_kernel} applies to quant=int4 only",
                            "drop backend.int4_kernel or use quant=int4")
        if opts.cuda_graph and not spec.device.startswith("cuda"):
            raise UserError("backend.cuda_graph=true needs a CUDA device", "use device=cuda or drop it")

    # -- attention choice --------------------------------------------------------------------------------------

    def _set_attention(self, choice: str) -> None:
        self.choice = choice
        self.flash = choice if choice in HF_NAMES else None  # HF_NAMES: the FLASH_CHOICES and the CPU reference
        self.sdpa_only = SDPA_CHOICES.get(choice)
        impl = HF_NAMES[choice] if self.flash else ("eager" if choice == "eager" else "sdpa")
        self.model.set_attn_implementation(impl)
        self.impl = impl
        self._free_cache()  # the cache's storage layout depends on the choice

    def _choose_attention(self, todo: list[str], asked: str, spec) -> dict[str, Any]:
        """Probe each candidate on the loaded model (a real left-padded prefill and decode step). A named choice
        is kept if it runs; ``auto`` times every candidate that runs (auto_attention.py) and keeps the fastest.
        Records why the others did not run."""
        skipped, ran = {}, {}
        for choice in todo:
            info, problem = self._probe(choice, asked)
            if problem:
                skipped[choice] = problem
                if choice == "sdpa" and problem.startswith("transformers") and "eager" not in todo:
                    todo.append("eager")  # auto ends with HF's eager attention, which every model has
                continue
            ran[choice] = info
            if asked != "auto":
                break
        if not ran:
            raise UserError(f"no attention choice among {todo} runs here: {skipped}", "use backend.attention=auto")
        chosen = next(iter(ran))
        facts: dict[str, Any] = {}
        if len(ran) > 1:
            self.measured = self._measure(list(ran), spec)
            chosen = self.measured.choice_for(min(spec.prompt_lens) if spec.prompt_lens else spec.opt_prompt_len)
            facts = self.measured.facts()
            if facts["attention_auto"]["per_cell"]:
                facts["attention_kernels"] = {c: ran[c] for c in set(self.measured.winners().values())}
        self._set_attention(chosen)
        info = {**ran[chosen], **facts, "attn_implementation": self.impl, "attention_requested": asked,
                "flash_attn_installed": installed_flash_attn()}
        if skipped:
            info["attention_skipped"] = skipped
        return info

    def _probe(self, choice: str, asked: str) -> tuple[dict[str, str], str | None]:
        """(what ran for prefill and decode, None) when ``choice`` runs on this model, else ({}, why not)."""
        if choice in FLASH_CHOICES:
            # the model's reason first: it holds on every machine
            problem = (f"the model has {self.attention_problem}" if self.attention_problem
                       else flash_problem(choice, self.device, self.dtype))
            if problem is not None:
                return {}, problem
            try:
                return self._probe_flash(choice), None
            except Exception as exc:
                problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                if asked != "auto":
                    raise UserError(f"backend.attention={choice} failed on this model: {problem}",
                                    "use backend.attention=auto") from exc
                return {}, problem
        try:
            self._set_attention(choice)
        except ValueError as exc:  # transformers has no SDPA path for this architecture (e.g. Gemma 2)
            problem = "transformers refuses it for this model: " + " ".join(str(exc).split())[:160]
            if asked != "auto":
                raise UserError(f"backend.attention={asked}: {problem}", "use backend.attention=eager (or auto)") \
                    from exc
            return {}, problem
        if choice == "eager":
            return {"attention_kernel_prefill": "eager", "attention_kernel_decode": "eager"}, None
        return self._probe_sdpa_kernels(), None

    def _measure(self, choices: list[str], spec) -> Measured:
        """Time one decode step of each choice at the grid's largest batch and shortest and longest fill."""
        batch, fills = grid_extremes(spec)
        say(f"attention=auto: timing {', '.join(choices)} at batch {batch}, fills {', '.join(map(str, fills))} ...")
        graphs: dict[str, DecodeGraph] = {}

        def step_at(choice: str, fill: int):
            if self.choice != choice:
                graphs.clear()
                self._set_attention(choice)
            self._position_at(batch, fill)
            tokens = torch.ones(batch, 1, dtype=torch.long, device=self.device)
            if not self.device.startswith("cuda"):
                return lambda: self._forward_decode(tokens, self.step_pos, self.mask)
            # replayed as a CUDA graph: the eager step of a small model is launch-bound (see auto_attention.py)
            if choice not in graphs:
                graphs[choice] = DecodeGraph(lambda step_tokens: self._forward_decode(step_tokens, self.step_pos,
                                                                                      self.mask), batch, self.device)
            graph = graphs[choice]
            return lambda: graph(tokens)

        with torch.no_grad():
            measured = measure_candidates(choices, batch, fills, step_at, self.device)
        graphs.clear()
        self._free_cache()
        say("attention=auto: " + "; ".join(f"{c} " + " / ".join(f"{t:.3f}" for t in by_fill.values()) + " ms"
                                           for c, by_fill in measured.ms.items())
            + f"; chosen: {measured.winners()}")
        return measured

    def _position_at(self, batch: int, fill: int) -> None:
        """The cache of ``batch`` rows as after an unpadded prefill of ``fill`` tokens: the next decode step
        writes slot ``fill`` and attends over ``fill + 1`` keys (zeros: a kernel's time does not depend on them)."""
        self._ensure_cache(batch)
        self.step_pos.fill_(fill)
        self.step_slot.fill_(fill)
        if self.fill is not None:
            self.fill.begin(torch.zeros(batch, 1, dtype=torch.long, device=self.device), fill + 1)
            self.mask = None
        else:
            self.mask_buf.zero_()
            self.mask_buf[:, : fill + 1] = 1
            self.mask = self.mask_buf

    def _probe_flash(self, choice: str) -> dict[str, str]:
        """Run a FlashAttention choice on the model; our ops never fall back, so what ran is the choice itself."""
        try:
            self._set_attention(choice)
            self._probe_run()
        finally:
            self._free_cache()
        return {"attention_kernel_prefill": choice, "attention_kernel_decode": choice,
                "attention_kernel_detail": KERNEL_DETAIL[choice]}

    def _probe_run(self) -> None:
        """A 2-row left-padded prefill and one decode step with the current attention choice."""
        ids = torch.ones(2, 4, dtype=torch.long, device=self.device)
        self.reset_kv()
        self._prefill(ids, torch.tensor([4, 2], device=self.device))
        self.fill.advance()
        self._forward_decode(ids[:, :1], self.step_pos, self.mask)

    def _sdpa_context(self):
        from torch.nn.attention import sdpa_kernel

        return sdpa_kernel([self.sdpa_only]) if self.sdpa_only is not None else contextlib.nullcontext()

    def _probe_sdpa_kernels(self) -> dict[str, str]:
        """Run a real 2-row prefill and decode step under each SDPA kernel alone (see attention.py)."""
        candidates_ = [self.sdpa_only] if self.sdpa_only is not None else priority_order()
        ids = torch.ones(2, 4, dtype=torch.long, device=self.device)
        results = {}

        def run_prefill():
            self.reset_kv()
            self._prefill(ids, None)

        results["attention_kernel_prefill"] = first_kernel_that_runs(run_prefill, candidates_, self.device)

        def run_decode():
            self.reset_kv()
            self._prefill(ids, None)
            self._forward_decode(ids[:, :1], self.step_pos, self.mask)

        results["attention_kernel_decode"] = first_kernel_that_runs(run_decode, candidates_, self.device)
        self._free_cache()
        if "none" in results.values():
            raise UserError(f"no SDPA kernel among {[c.name for c in candidates_]} runs this model here",
                            "use backend.attention=auto")
        return results

    # -- cache -------------------------------------------------------------------------------------------------

    def _free_cache(self) -> None:
        self.cache, self.cache_batch, self.fill, self.graphs = None, None, None, {}
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
        self.cache = StaticCache(config=cfg, max_cache_len=self.max_seq)
        self.cache.early_initialization(batch_size=batch, num_heads=cfg.num_key_value_heads,
                                        head_dim=model_head_dim(cfg), dtype=self.dtype,
                                        device=torch.device(self.device))
        if self.flash:
            use_token_major_storage(self.cache)
            self.fill = FillState(batch, self.max_seq, self.device)
        # fixed-address step inputs (CUDA graphs replay them): next position per row, next cache slot
        self.step_pos = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self.step_slot = torch.zeros(1, dtype=torch.long, device=self.device)
        self.mask_buf = torch.zeros(batch, self.max_seq, dtype=torch.long, device=self.device)
        self.cache_batch = batch

    # -- phases ------------------------------------------------------------------------------------------------

    def _model_kwargs(self, cache_position: torch.Tensor) -> dict[str, Any]:
        kwargs = self.fill.kwargs() if self.fill is not None else {}
        if self.takes_cache_position:  # transformers < 5.2x: else it derives it from the cache (a host sync)
            kwargs["cache_position"] = cache_position
        return kwargs

    @torch.no_grad()
    def _prefill(self, input_ids: torch.Tensor, prompt_lens: torch.Tensor | None) -> torch.Tensor:
        batch, plen = input_ids.shape
        self._ensure_cache(batch)
        if prompt_lens is None:
            pad = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
            self.mask = None
        else:
            pad = (plen - prompt_lens.to(self.device)).view(batch, 1)
            width = self.max_seq if self.static else plen
            cols = torch.arange(width, device=self.device).view(1, -1)
            # [B, max_seq]: left padding is never attended to (FlashAttention choices skip it via FillState)
            self.mask = None if self.flash else (cols >= pad).long()
            if self.mask is not None and self.static:  # one fixed buffer per cache: a CUDA graph reads it
                self.mask = self.mask_buf.copy_(self.mask)
        positions = (torch.arange(plen, device=self.device).view(1, -1) - pad).clamp(min=0)  # [B, P]
        if self.fill is not None:
            self.fill.begin(pad, plen)
        slots = torch.arange(plen, device=self.device)
        with self._sdpa_context():
            out = self.model(input_ids=input_ids, attention_mask=self.mask, position_ids=positions,
                             use_cache=True, logits_to_keep=1, **{self.cache_kw: self.cache},
                             **self._model_kwargs(slots))
        if self.static:
            self.step_pos.copy_(positions[:, -1:] + 1)  # [B, 1] position of the next token, advanced in place
            self.step_slot.fill_(plen)
        else:
            self.step_pos = positions[:, -1:] + 1
        return out.logits[:, -1]

    def _forward_decode(self, tokens, positions, mask):
        with self._sdpa_context():
            out = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                             use_cache=True, **{self.cache_kw: self.cache},
                             **(self._model_kwargs(self.step_slot) if self.static else {}))
        return out.logits[:, -1]

    @hookimpl
    def prefill(self, input_ids, prompt_lens):
        if self.measured is not None and self.choice in self.measured.ms:  # auto: the winner nearer this fill
            choice = self.measured.choice_for(input_ids.shape[1])
            if choice != self.choice:
                self._set_attention(choice)
        return self._prefill(input_ids, prompt_lens)

    def _step(self, tokens: torch.Tensor) -> torch.Tensor:
        """One decode step with its counters: the fill before, the positions after (a captured graph holds all)."""
        if self.fill is not None:
            self.fill.advance()
        logits = self.decode_fn(tokens, self.step_pos, self.mask)
        self.step_pos.add_(1)
        if self.static:
            self.step_slot.add_(1)
        return logits

    @hookimpl
    @torch.no_grad()
    def decode_step(self, tokens):
        if not self.static and self.mask is not None:
            self.mask = torch.nn.functional.pad(self.mask, (0, 1), value=1)
        if self.cuda_graph:
            # one graph per batch size and mask kind (SDPA rows: left-padded or not; the flash choices: no mask)
            key = (self.cache_batch, self.mask is None)
            if key not in self.graphs:  # not setdefault: a DecodeGraph allocates on the device, every token
                self.graphs[key] = DecodeGraph(self._step, self.cache_batch, self.device)
            return self.graphs[key](tokens)
        logits = self._step(tokens)
        # a compiled step's outputs may be CUDA-graph buffers, overwritten by the next replay; eager's are fresh
        return logits.clone() if isinstance(self.decode_fn, CompiledStep) else logits

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
