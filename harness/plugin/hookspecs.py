"""The hook specifications: the only way a backend reaches the harness (and the harness a backend).

A backend is a plugin object registered under its backend name (built-in backends are registered exactly like
third-party ones, through the ``enginebench.backends`` entry-point group). The harness calls the hooks of the
selected backend only (other backends are excluded from the call), while non-backend plugins may wrap any hook
(``hookwrapper=True``) to observe it, e.g. for tracing.

Tensor conventions: token ids are int64 torch tensors on the run's device; logits are returned as a torch tensor
[B, V] on that device (any float dtype), finite. Shapes are noted as ``# [B, P]``. The harness checks every result
of ``prefill`` and ``decode_step`` during validation and warm-up (harness.plugin.contract), never in a timed region.
Every backend must implement ``load``, ``prefill``, ``decode_step`` and ``reset_kv``; docs/plugins.md has the
whole contract.
"""
from __future__ import annotations

from typing import Any

from harness import hookspec


@hookspec
def enginebench_backend_options() -> type:
    """Return the dataclass of this backend's options (the ``backend=<name>`` config node, minus ``name``).

    Fields are typed and have defaults; ``harness.sdk.choice(...)`` gives an option its allowed values and
    ``harness.sdk.needs(...)`` what it needs of the others; a ``check(self)`` method may refuse other combinations
    with a UserError. Called once at start-up on every backend plugin: the options appear under ``backend.*``, are
    overridable from the command line, and are checked for every job before the first one starts. The backend
    reads them as a dict, ``spec.options``, in ``load``.
    """


@hookspec
def enginebench_backend_defaults() -> dict[str, Any]:
    """The untyped alternative to ``enginebench_backend_options``: a dict of option defaults (types are taken
    from the values; no allowed values). Used only when a backend does not implement the typed hook."""


@hookspec
def check_quant(quant: Any, options: dict[str, Any], device: str) -> None:
    """Raise :class:`harness.errors.UserError` when this backend cannot run the weight-only scheme ``quant`` (a
    resolved :class:`harness.model.quant.QuantScheme`, never ``none``) with these options on ``device`` (``cpu``,
    ``cuda:N``).

    Called for every job of a command line before any job runs, so a sweep over ``quant=none,int8,int4`` fails in
    one line up front instead of after the first jobs. Must be cheap (no model, no heavy import beyond the
    library the scheme needs). A backend without this hook runs ``quant=none`` only.
    """


@hookspec(firstresult=True)
def load(spec: Any) -> dict[str, Any]:
    """Prepare the backend for a job: build or load artifacts, allocate the KV cache, warm nothing up yet.

    ``spec`` is a :class:`harness.plugin.loadspec.LoadSpec`: the model source (``spec.model.build(dtype, device)`` gives
    the HF model with the run's weights), dtype, device, backend options, the largest batch and sequence the job
    will use (preallocate for them), ``task`` and the artifact cache directory.
    Returns a dict of facts to record with every result row (e.g. the attention kernel that runs, the providers
    in use): stored as JSON in the ``backend_info`` column and in run.json. The fact ``resolved_options`` (a
    dict) names what an ``auto`` option became; the configuration is then labelled by it (``mode=evaluator``).
    """


@hookspec(firstresult=True)
def prefill(input_ids: Any, prompt_lens: Any | None) -> Any:
    """Fill the (empty) KV cache from a prompt batch and return the last position's logits.

    input_ids: [B, P] int64. prompt_lens: None when every row is P tokens long, else [B] int64 with the real length
    of each row; rows are then left-padded (the first ``P - prompt_lens[b]`` ids of row b are padding, never
    attended to, and the row's first real token has position 0). Returns logits [B, V] at position P - 1.
    """


@hookspec(firstresult=True)
def decode_step(tokens: Any) -> Any:
    """Append one token per row ([B, 1] int64) after everything seen since the last reset; return logits [B, V]."""


@hookspec(firstresult=True)
def reset_kv() -> None:
    """Empty the KV cache without reallocating it (the next call is a prefill). The return value is ignored:
    returning nothing (None) is fine."""


@hookspec
def close() -> None:
    """Release everything the backend holds (device memory, sessions, files)."""


@hookspec(firstresult=True)
def kernel_category(name: str) -> str | None:
    """Optional: the category of a kernel or operator ``name`` seen in a profile (``measure.profile=true``), one of
    ``gemm``, ``attention``, ``norm_elementwise``, ``copy``, ``sampling``, ``other``; None leaves it to the
    harness's rule (harness/profile/categories.py, docs/profiling.md). For kernels whose names the rule misreads."""


@hookspec(firstresult=True)
def profile_kernels(run: Any, trace_path: str) -> list[dict[str, Any]] | None:
    """Optional: profile ``run()`` (a prefill or a few decode steps) with the backend's own profiler, for kernels
    that torch.profiler does not see (a runtime's CPU kernels are not torch operators).

    Call ``run()`` once, profiled, and return one dict per kernel execution, ``{"name": str, "us": float}``
    (its duration in microseconds), optionally writing a Chrome-trace JSON to ``trace_path``. Return None
    *without calling* ``run`` to leave the profile to torch.profiler (CUPTI on CUDA sees every kernel of the
    process). Called after a cell's timed iterations, never inside them.
    """
