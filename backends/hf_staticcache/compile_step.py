"""``backend.compile``: torch.compile of the decode step, with Inductor's caches inside the artifact cache.

- ``default``: Inductor's kernels, no CUDA graphs;
- ``reduce-overhead``: the same kernels replayed as CUDA graphs;
- ``max-autotune``: what the fastest plain scripts do (gpt-fast): CUDA graphs, Inductor's GEMM autotuning and
  coordinate-descent tuning of every generated kernel's launch configuration (torch's ``max-autotune`` mode holds
  all three), and the whole step as one graph (``fullgraph=True``): a graph break would split the step into
  pieces with Python between them, so it is an error here rather than a silent slowdown.

With ``backend.cuda_graph=true`` (``default`` or ``max-autotune``) Inductor compiles without its CUDA-graph trees
(``max-autotune-no-cudagraphs``) and the backend captures the whole compiled step by hand (decode_graph.py), as
serving engines do: a replay is one launch, where a CUDA-graph tree's replay first runs Dynamo's guards and the
tree's Python bookkeeping (checking every static input's address, copying the others in) on the host every token.

Inductor keeps its on-disk caches (the FX graph cache, the autotuning results, Triton's compiled kernels) under
``TORCHINDUCTOR_CACHE_DIR``. Unless the user set it, it points into the artifact cache (``<cache_dir>/inductor``),
so a second run with the same cache reuses the compiled and tuned kernels: it starts warm, and ``cache_dir`` is
the one directory to keep (or carry to another machine of the same kind).

The static cache's token-major storage (static_attention.py) reaches HF as a transposed view, which HF writes with
``index_copy_``. torch's decomposition of the functional ``index_copy`` ends in ``.contiguous()``, where eager
``index_copy`` keeps its input's layout: under torch.compile every layer then copied its whole K and V cache twice
per step (to head-major and back), 1.3 ms of a 4.3 ms step at batch 32 × 1,024 on an H200.
``keep_index_copy_layout`` registers a decomposition with eager's layout: the step writes one slot per layer.

The compile happens at the first call of each batch size (during the warm-up iterations, never inside a timed
one); it is announced with the time it took last time (``slow_work``).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from harness.sdk import slow_work

INDUCTOR_DIR = "inductor"


def use_inductor_cache(cache_dir: Path) -> str:
    """Point Inductor's caches into ``cache_dir`` unless the user chose a directory; returns the one in use."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # torch writes its default into the variable at its first compile: that is no choice of the user's
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        current = str(Path(cache_dir) / INDUCTOR_DIR)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = current
    return current


def compile_options(mode: str, hand_captured: bool = False) -> dict:
    """The keyword arguments of torch.compile for ``mode`` (``hand_captured``: the caller captures the graph)."""
    inductor_mode = "max-autotune-no-cudagraphs" if hand_captured and mode == "max-autotune" else mode
    return {"mode": inductor_mode, "fullgraph": mode == "max-autotune"}


_UPSTREAM_INDEX_COPY = []  # torch's own decomposition, for the cases this one leaves to it


def _index_copy_keeping_layout(x: torch.Tensor, dim: int, index: torch.Tensor, source: torch.Tensor):
    """``aten.index_copy`` as eager computes it: a copy of ``x`` in ``x``'s own layout with the slots replaced."""
    if x.ndim == 0 or source.ndim == 0:  # scalars: torch's decomposition (no layout to keep)
        return _UPSTREAM_INDEX_COPY[0](x, dim, index, source)
    index = index.unsqueeze(0) if index.ndim == 0 else index
    return torch.ops.aten.index_put(x, (None,) * (dim % x.ndim) + (index,), source)


def keep_index_copy_layout() -> bool:
    """Make Inductor decompose ``index_copy`` without forcing a contiguous result (see the module docstring);
    False where this torch has no such table (the step then compiles as before)."""
    try:
        from torch._inductor.decomposition import decompositions
    except ImportError:
        return False
    op = torch.ops.aten.index_copy.default
    if decompositions.get(op) is not _index_copy_keeping_layout:
        _UPSTREAM_INDEX_COPY[:] = [decompositions[op]]
        decompositions[op] = _index_copy_keeping_layout
    return True


class CompiledStep:
    """The compiled decode step; the first call per batch size (the compile) is announced and timed."""

    def __init__(self, step: Callable, mode: str, cache_dir: Path, work_key: str, hand_captured: bool = False):
        if hand_captured and mode == "reduce-overhead":
            raise ValueError("reduce-overhead is Inductor's own CUDA graphs: nothing to capture by hand")
        keep_index_copy_layout()
        self.fn = torch.compile(step, **compile_options(mode, hand_captured))
        self.mode, self.cache_dir, self.work_key = mode, Path(cache_dir), work_key
        self.compiled: dict[int, float] = {}  # batch -> seconds its first call took (the compile, cold or warm)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, mask):
        batch = tokens.shape[0]
        if batch in self.compiled:
            return self.fn(tokens, positions, mask)
        with slow_work(self.cache_dir, f"compiling the decode step ({self.mode}, batch {batch})",
                       f"{self.work_key}:b{batch}") as timed:
            out = self.fn(tokens, positions, mask)
            if tokens.is_cuda:
                torch.cuda.synchronize()  # the first call's time includes its autotuning, which runs on the GPU
        self.compiled[batch] = round(timed.seconds, 2)
        return out


def decode_graph_kind(compile_mode: str, hand_captured: bool) -> str:
    """What replays the decode step (``backend_info.decode_graph``): read beside the step times it explains."""
    if hand_captured:
        return "captured by the backend"
    if compile_mode in ("reduce-overhead", "max-autotune"):
        return "Inductor's CUDA-graph trees"
    return "none"
