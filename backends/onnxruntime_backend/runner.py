"""Runs the static-cache ONNX graph with ONNX Runtime, every tensor bound in place with I/O binding.

Memory: the K/V caches ([max_batch, Hkv, L, D] per layer) are torch tensors allocated once on the run's device;
a batch of B rows binds a view of the first B rows. Each ``present_*`` output is bound to the same buffer as its
``past_*`` input, so the graph's ScatterND writes the new positions in place and no full-cache copy is made.
Per-step inputs live in fixed buffers updated on the device (positions advance with an in-place add).
``reset`` only rewinds: slots past the fill are never attended to, so the cache is not even cleared.

Two graphs, told apart by their inputs (graph.py): the explicit-attention graph (ScatterND + masked softmax; its
mask covers only the slots in use, so attention reads the fill, not the preallocated length) and the
GroupQueryAttention graph (gqa.py; rows right-padded, per-row lengths in a device tensor).

CUDA graphs (``cuda_graph=true``) need the GroupQueryAttention graph. With the explicit graph, ORT's CUDA EP places
the small int64 nodes that turn ``cache_position`` into ScatterND indices on the CPU ("CPU path deemed faster"),
and a captured graph freezes the values those nodes computed at capture time, so every replay writes the cache
slot of the first step (measured on an H100: first decode exact, every replay off by 0.5-0.8 in the logits); its
mask also changes shape every step. The GroupQueryAttention graph keeps every per-step value in device buffers of
fixed shape per batch size: one captured graph per batch size (run option gpu_graph_id), prefill never captured.
"""
from __future__ import annotations

from typing import Any

import torch

from backends.onnx_export.graph import io_names
from backends.onnxruntime_backend.ragged_cursor import RaggedCursor
from harness.sdk import CacheCursor, MissingLibrary, UserError
from harness.sdk import head_dim as model_head_dim

ONNX_TYPES = {torch.float32: 1, torch.float16: 10, torch.bfloat16: 16, torch.int64: 7, torch.int32: 6}


def import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingLibrary("onnxruntime", "onnxruntime", "onnxruntime (CPU) or onnxruntime-gpu (CUDA)") from exc
    return ort


def graph_attention(onnx_path: str) -> str:
    """Which of the two exported graphs the file holds, from its input names (weights not loaded)."""
    import onnx

    names = {i.name for i in onnx.load(onnx_path, load_external_data=False).graph.input}
    return "gqa" if "seqlens_k" in names else "explicit"


def resolve_provider(provider: str, device: str, cuda_graph: bool) -> str:
    """The execution provider (cuda | cpu) of ``backend.provider`` on ``device``, or a UserError for a combination
    that cannot run. Cheap: the plugin calls it before any export work."""
    cuda = device.startswith("cuda")
    if provider == "auto":
        provider = "cuda" if cuda else "cpu"
    if provider == "cuda" and not cuda:
        raise UserError("backend.provider=cuda needs device=cuda", "use device=cuda or backend.provider=cpu")
    if provider == "cpu" and cuda:
        raise UserError("backend.provider=cpu cannot bind CUDA buffers", "use device=cpu with provider=cpu")
    if provider == "cuda" and "CUDAExecutionProvider" not in import_ort().get_available_providers():
        raise MissingLibrary("onnxruntime", "onnxruntime CUDAExecutionProvider", "onnxruntime-gpu")
    if cuda_graph and provider != "cuda":  # the graph form (gqa) was checked with the options
        raise UserError("backend.cuda_graph=true replays CUDA graphs: it needs the CUDA EP",
                        "use device=cuda, or backend.cuda_graph=false")
    return provider


def check_graph_dtype(attention: str, provider: str, dtype: torch.dtype) -> None:
    if provider == "cuda" and attention == "gqa" and dtype == torch.float32:
        raise UserError("ORT's CUDA GroupQueryAttention has no float32 kernel (it would run on the CPU)",
                        "use dtype=bfloat16 or float16, or backend.attention=explicit")


_OPT_LEVELS = {"disable": lambda ort: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
               "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
               "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
               "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


class OrtStaticCacheRunner:
    def __init__(self, onnx_path: str, config, dtype: torch.dtype, device: str, max_batch: int,
                 provider: str = "auto", opt_level: str = "all", cuda_graph: bool = False):
        ort = import_ort()
        self.ort, self.device, self.dtype = ort, device, dtype
        self.cuda = device.startswith("cuda")
        self.device_id = torch.device(device).index or 0 if self.cuda else 0
        provider = resolve_provider(provider, device, cuda_graph)
        self.attention = graph_attention(onnx_path)
        check_graph_dtype(self.attention, provider, dtype)
        so = _session_options(ort, opt_level, device)
        ort.set_default_logger_severity(3)  # per-node ScatterND notices would flood the progress output
        self.stream = None
        if provider == "cuda":
            # ORT must run on a stream of ours: torch's default stream has handle 0, which ORT treats as "no user
            # stream" and then runs on a private stream the harness's CUDA events do not order with.
            self.stream = torch.cuda.Stream(device=device)
            options = {"device_id": str(self.device_id), "user_compute_stream": str(self.stream.cuda_stream),
                       "enable_cuda_graph": "1" if cuda_graph else "0"}
            providers = [("CUDAExecutionProvider", options)]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(onnx_path, so, providers=providers)
        self._session_args = (onnx_path, opt_level, providers)  # for profiled_on_cpu
        self.providers_used = self.session.get_providers()
        self.max_seq = max_seq = int(self.session.get_inputs()[4].shape[2])  # past_key_0 [B, Hkv, L, D]: L fixed
        self._run_options: dict[int | None, Any] = {}  # by CUDA graph id (None: no graph)
        # by batch size: its IOBinding and what that binding's step inputs point at (_binding_for)
        self._bindings: dict[int, tuple[Any, dict[str, tuple]]] = {}
        self.cuda_graph = cuda_graph
        self.in_names, self.out_names = io_names(config.num_hidden_layers, self.attention)
        head_dim = model_head_dim(config)
        shape = (max_batch, config.num_key_value_heads, max_seq, head_dim)
        self.caches = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(2 * config.num_hidden_layers)]
        self.logits = torch.empty(max_batch, config.vocab_size, dtype=dtype, device=device)
        self.cursor = RaggedCursor(device, max_batch, max_seq, constant_decode_total=cuda_graph) \
            if self.attention == "gqa" \
            else CacheCursor(device, max_batch, max_seq)

    def _bind(self, binding, name: str, tensor: torch.Tensor) -> None:
        # total_sequence_length is a CPU input of GroupQueryAttention even on the CUDA EP
        on_device = "cuda" if tensor.is_cuda else "cpu"
        binding.bind_input(name, on_device, self.device_id if tensor.is_cuda else 0, ONNX_TYPES[tensor.dtype],
                           list(tensor.shape), tensor.data_ptr())

    def _run(self, step_inputs, batch: int, graph_id: int) -> None:
        """One session run on the four per-step inputs; graph_id >= 0 captures/replays a CUDA graph."""
        b, bound = self._binding_for(batch)
        self._inputs_alive = step_inputs  # ORT reads them during the run: keep them referenced until the next call
        for name, t in zip(self.in_names[:4], step_inputs):
            # Decode inputs live in fixed buffers: rebinding them every step was ~50 host calls per token
            key = (t.data_ptr(), tuple(t.shape), t.dtype, t.device)
            if bound.get(name) != key:
                self._bind(b, name, t)
                bound[name] = key
        self.session.run_with_iobinding(b, self._options_for(graph_id if self.cuda_graph else None))

    def _binding_for(self, batch: int) -> tuple[Any, dict[str, tuple]]:
        """The IOBinding of one batch size and its record of bound step inputs: the caches' views and the logits
        are bound once, at fixed addresses (a captured CUDA graph needs them there anyway); only step inputs that
        moved are rebound per run."""
        if batch in self._bindings:
            return self._bindings[batch]
        b = self.session.io_binding()
        dev = "cuda" if self.cuda else "cpu"
        for i, cache in enumerate(self.caches):
            view = cache[:batch]
            self._bind(b, self.in_names[4 + i], view)
            b.bind_output(self.out_names[1 + i], dev, self.device_id, ONNX_TYPES[self.dtype], list(view.shape),
                          view.data_ptr())  # present_* aliases past_*: the update happens in place
        out = self.logits[:batch]
        b.bind_output("logits", dev, self.device_id, ONNX_TYPES[self.dtype], list(out.shape), out.data_ptr())
        self._bindings[batch] = b, {}
        return self._bindings[batch]

    def _options_for(self, graph_id: int | None):
        if graph_id not in self._run_options:
            options = self.ort.RunOptions()
            if self.cuda:
                # Let the GPU run ahead: _on_stream orders ORT's stream with the caller's: no host wait needed.
                options.add_run_config_entry("disable_synchronize_execution_providers", "1")
            if graph_id is not None:
                options.add_run_config_entry("gpu_graph_id", str(graph_id))
            self._run_options[graph_id] = options
        return self._run_options[graph_id]

    def _on_stream(self, work):
        """Run ``work`` on ORT's stream, ordered after the caller's stream and before its next operation."""
        if self.stream is None:
            return work()
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            out = work()
        caller.wait_stream(self.stream)
        return out

    def prefill(self, input_ids: torch.Tensor, prompt_lens: torch.Tensor | None) -> torch.Tensor:
        def work():
            inputs = self.cursor.begin(input_ids, prompt_lens)
            batch, plen = inputs[0].shape
            if self.attention == "explicit":
                inputs = (*inputs, self.cursor.mask(plen))
            self._run(inputs, batch, graph_id=-1)  # prompts are never captured
            return self.logits[:batch].clone()

        if input_ids.is_cuda and self.stream is not None:
            input_ids.record_stream(self.stream)  # the caller may free it while ORT still reads it
        return self._on_stream(work)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        def work():
            inputs = self.cursor.step(tokens)
            batch = inputs[0].shape[0]
            if self.attention == "explicit":
                inputs = (*inputs, self.cursor.mask(self.cursor.fill + 1))
            self._run(inputs, batch, graph_id=batch)  # one captured graph per batch size
            self.cursor.advance()
            return self.logits[:batch].clone()

        if tokens.is_cuda and self.stream is not None:
            tokens.record_stream(self.stream)
        return self._on_stream(work)

    def reset(self) -> None:
        self.cursor.reset()

    def profiled_on_cpu(self, run, trace_path: str) -> list[dict[str, Any]]:
        """``run()`` on a second session of the same model with ORT's profiler on (the CPU EP's kernels are not
        torch operators, so torch.profiler cannot see them); one ``{"name", "us"}`` per node execution, named by
        op type. The caches and step buffers are bound per run, so the second session continues the first one's
        sequence; the timed session never has profiling on."""
        import json
        from pathlib import Path

        path, opt_level, providers = self._session_args
        so = _session_options(self.ort, opt_level, "cuda" if self.cuda else "cpu")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(trace_path).with_suffix(""))
        timed, self.session = self.session, self.ort.InferenceSession(path, so, providers=providers)
        bindings, self._bindings = self._bindings, {}  # a binding belongs to its session: the second gets its own
        warm = []

        def run_first_twice(step_inputs, batch: int, graph_id: int) -> None:
            # A new session's first run pays its allocations: run the first step twice and drop the first. The
            # same inputs write the same cache slots and logits, so the repeat leaves the sequence as it was.
            if not warm:
                warm.append(True)
                OrtStaticCacheRunner._run(self, step_inputs, batch, graph_id)
            OrtStaticCacheRunner._run(self, step_inputs, batch, graph_id)

        self._run = run_first_twice
        try:
            run()
        finally:
            del self._run
            written, self.session = self.session.end_profiling(), timed
            self._bindings = bindings
        Path(written).replace(trace_path)  # ORT's profile is a Chrome trace already
        events = json.loads(Path(trace_path).read_text())
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e["name"] == "model_run")
        after_warm_up = runs[0][1] if runs else 0
        return [{"name": e["args"].get("op_name", e["name"]), "us": float(e["dur"])} for e in events
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= after_warm_up]

    def facts(self) -> dict[str, Any]:
        return {"providers": self.providers_used, "cuda_graph": self.cuda_graph, "onnx_attention": self.attention,
                "kv_update": "in place (aliased)"}


def _session_options(ort, opt_level: str, device: str):
    """The session's options. On the CPU, ONNX Runtime's intra-op pool takes torch's thread count (what
    ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` set for the HF backend), so every backend of a comparison
    computes on as many threads; ONNX Runtime's default, one spinning thread per core, ignores both."""
    so = ort.SessionOptions()
    so.graph_optimization_level = _OPT_LEVELS[opt_level](ort)
    so.log_severity_level = 3
    if not device.startswith("cuda"):
        so.intra_op_num_threads = torch.get_num_threads()
    return so
