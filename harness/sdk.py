"""The backend SDK: everything a backend (built-in or third-party) may import from the harness, in one place.

    from harness.sdk import hookimpl, UserError, head_dim, get_or_build, say

Stability: the names in ``__all__`` keep their meaning and signatures within a major version of enginebench; a
change to one of them is a breaking change and is announced in the README. Everything else in ``harness`` is
internal and may change in any release. Built-in backends import from here only (tests/test_sdk.py checks it),
so the contract is exercised by every run. The hooks themselves are specified in :mod:`harness.plugin.hookspecs`, and
docs/plugins.md describes the whole plugin contract.

What is here, by purpose:

- hooks: ``hookimpl`` (mark a hook implementation), ``LoadSpec`` (what ``load(spec)`` receives);
- options: ``choice(*values)`` (an option's allowed values, the first the default) and ``needs(default, **others)``
  (what a true value needs of the other options), for the fields of the options dataclass;
- errors: ``UserError(problem, fix)`` for bad input (one line, exit 2), ``MissingLibrary`` for an absent
  optional dependency;
- model helpers: ``head_dim(config)``, ``dtype_name(dtype)``;
- model families (harness/model/families.py): ``Family`` / ``FAMILIES`` / ``family_of(config)`` (the architecture
  differences the graph backends rebuild, as data), ``graph_problem(config, max_seq, backend)`` and
  ``plain_attention_problem(config, max_seq)`` (what a backend or a FlashAttention kernel cannot compute, one phrase),
  ``rope_tables(hf_model, max_seq)`` (HF's cos/sin per layer type at every slot), and the per-config facts
  ``layer_types``, ``sliding_window``, ``short_windows``, ``softcaps``, ``activation``;
- transformers' cache argument: ``cache_keyword(model)`` and ``returned_cache(output)`` (``cache`` or
  ``past_key_values``, whichever the installed transformers takes);
- artifact cache: ``get_or_build(root, kind, key, build)`` returns an ``Artifact`` (directory, meta, reused),
  built once per key, content-checked and shared between concurrent runs;
- progress: ``say(message)`` prints a status line without breaking the progress bar; ``slow_work(cache_dir, what,
  key)`` announces slow, repeatable work (an export, a compile) with the time it took last time, and records it;
- timing: ``time_calls(fn, calls, device)`` the instrument's timer for back-to-back calls
  (harness/measure/instrument.py: device ms per call from CUDA events, or wall time on a CPU), for a backend that
  measures something during load (the HF backend's ``attention=auto``), outside the timed cells;
- validation helpers: ``random_prompt_ids``, ``left_pad``, ``reference_greedy``, ``compare`` (to check an
  exported artifact against HF float32 before caching it, as the ONNX export does);
- weight-only quantization: ``QuantScheme`` (what ``spec.quant`` holds: scheme, group size, symmetric, label),
  ``quantize_weight`` (codes, scales and zero points of a weight under a scheme, for backends that bake them in),
  ``is_quantized_param`` (which HF parameters a scheme covers); see harness/model/quant.py;
- roofline: ``attention_reads(kv, cache_slots, zero_point_bits)``, the backend_info facts that say what a decode
  step's kernels read (the whole static cache or its filled part; zero points as packed), so the bandwidth
  metrics count those bytes (harness/measure/roofline.py; without them: the filled part);
- static KV cache: ``StepBuffers``, ``CacheCursor`` (positions, slots, masks and fixed-address step buffers for
  graph runners) and ``RunnerHooks`` (the four per-step hooks delegated to ``self.runner``).
"""
from __future__ import annotations

from harness import hookimpl
from harness.accuracy.inputs import left_pad, random_prompt_ids
from harness.accuracy.validate import compare, reference_greedy
from harness.errors import MissingLibrary, UserError
from harness.measure.instrument import time_calls
from harness.measure.roofline import attention_reads
from harness.model.artifacts import Artifact, get_or_build
from harness.model.durations import slow_work
from harness.model.families import (
    FAMILIES,
    Family,
    activation,
    family_of,
    graph_problem,
    layer_types,
    plain_attention_problem,
    rope_tables,
    short_windows,
    sliding_window,
    softcaps,
)
from harness.model.hf_cache import cache_keyword, returned_cache
from harness.model.quant import QuantScheme, is_quantized_param, quantize_weight
from harness.model.sources import dtype_name, head_dim
from harness.model.static_cache import CacheCursor, RunnerHooks, StepBuffers
from harness.plugin.loadspec import LoadSpec
from harness.plugin.options import choice, needs
from harness.progress import say

__all__ = [
    "hookimpl", "LoadSpec",
    "choice", "needs",
    "UserError", "MissingLibrary",
    "head_dim", "dtype_name",
    "Family", "FAMILIES", "family_of", "graph_problem", "plain_attention_problem", "rope_tables",
    "layer_types", "sliding_window", "short_windows", "softcaps", "activation",
    "cache_keyword", "returned_cache",
    "Artifact", "get_or_build",
    "say", "slow_work",
    "time_calls",
    "random_prompt_ids", "left_pad", "reference_greedy", "compare",
    "QuantScheme", "quantize_weight", "is_quantized_param",
    "attention_reads",
    "StepBuffers", "CacheCursor", "RunnerHooks",
]
