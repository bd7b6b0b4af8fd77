"""Building a TensorRT engine from a network definition, with optimization profiles, and caching it.

Two profiles: 0 = prefill (batch 1..max, sequence 1..max_seq), 1 = decode (sequence 1); opt shapes come from the
grid. Networks are strongly typed (precision from the tensors' types). The timing cache persists beside the
engines and is reused by later builds. Engines live in the artifact cache keyed by what determines them (the
network's source, profiles, precision, TensorRT flavour and version, target compute capability).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from backends.trt_common.flavour import TensorRT
from harness.sdk import Artifact, get_or_build, say

ENGINE_FILE = "model.engine"


@dataclass
class Profiles:
    """Shapes of the dynamic axes: batch, new tokens per call (seq) and slots in use (kv_len)."""

    max_batch: int
    max_seq: int
    opt_batch: int
    opt_prompt: int

    def ranges(self, name: str, shape: tuple[int, ...], profile: int) -> tuple[tuple, tuple, tuple]:
        """(min, opt, max) of input ``name`` (static dims as given) for profile 0 (prefill) or 1 (decode)."""
        b = (1, self.opt_batch, self.max_batch)
        if profile == 0:
            s, kv = (1, self.opt_prompt, self.max_seq), (1, self.opt_prompt, self.max_seq)
        else:
            s, kv = (1, 1, 1), (2, min(self.max_seq, self.opt_prompt + 1), self.max_seq)
        axes = {"input_ids": (b, s), "position_ids": (b, s), "cache_position": (s,), "attention_mask": (b, kv),
                "write_index": (b,)}
        dynamic = axes.get(name, (b,))  # caches: [batch, kv_heads, max_seq, head_dim], batch dynamic
        out = []
        for i in range(3):
            ranges = iter(dynamic)
            out.append(tuple(next(ranges)[i] if d == -1 else d for d in shape))  # static dims stay as declared
        return tuple(out)


def add_profiles(trt, builder, network, config, profiles: Profiles) -> None:
    for p in (0, 1):
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            lo, opt, hi = profiles.ranges(tensor.name, tuple(tensor.shape), p)
            profile.set_shape(tensor.name, lo, opt, hi)
        config.add_optimization_profile(profile)


class _Heartbeat:
    """A progress line every few seconds while TensorRT builds (building can take minutes)."""

    def __init__(self, label: str, every_s: float = 15.0):
        self.label, self.every_s, self._stop = label, every_s, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.perf_counter()
        while not self._stop.wait(self.every_s):
            say(f"{self.label}: still building ({time.perf_counter() - t0:.0f} s)")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _build_into_file(trt, builder, network, config, out_path: Path) -> bool:
    """Build and write the engine. Streamed to the file in TensorRT's chunks where the API allows: a serialized
    engine holds every weight, so holding it in memory (and copying it to bytes) added two model-sized copies to
    the build's peak (TinyLlama-1.1B float32: 4.4 GB each)."""
    with open(out_path, "wb") as f:
        if hasattr(builder, "build_serialized_network_to_stream"):  # TensorRT-RTX has it; an older TensorRT may not
            class FileWriter(trt.IStreamWriter):
                def __init__(self):
                    trt.IStreamWriter.__init__(self)

                def write(self, data) -> int:
                    return f.write(data)

            return bool(builder.build_serialized_network_to_stream(network, config, FileWriter()))
        serialized = builder.build_serialized_network(network, config)
        if serialized is not None:
            f.write(memoryview(serialized))  # the host memory's buffer itself, not a bytes copy of it
        return serialized is not None


def build_engine(rt: TensorRT, define_network: Callable, profiles: Profiles, out_path: Path,
                 timing_cache_path: Path, workspace_mib: int, label: str) -> dict:
    """``define_network(trt, builder, network)`` fills the network (parser or layer by layer); returns build facts."""
    trt = rt.trt
    logger = rt.logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    keep_alive = define_network(trt, builder, network)  # host weight arrays must outlive the build
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    add_profiles(trt, builder, network, config, profiles)
    say(f"{label}: building engine ({network.num_layers} layers, {network.num_inputs} inputs, "
                 f"TensorRT {rt.flavour} {rt.version}) ...")
    t0 = time.perf_counter()
    with _Heartbeat(label):
        built = _build_into_file(trt, builder, network, config, out_path)
    if not built:
        raise RuntimeError(f"TensorRT ({rt.flavour} {rt.version}) could not build the engine; see its log above")
    timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
    timing_cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    del keep_alive
    return {"engine_build_seconds": time.perf_counter() - t0, "layers": network.num_layers,
            "engine_bytes": out_path.stat().st_size, "flavour": rt.flavour, "trt_version": rt.version}


def target_compute_capability() -> str:
    """The GPU's compute capability, or 'aot-default' when building ahead of time on a machine without one."""
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"{major}.{minor}"
    return "aot-default"


def engine_artifact(spec, rt: TensorRT, kind: str, source_key: dict, define_network: Callable,
                    profiles: Profiles) -> Artifact:
    key = {"source": source_key, "profiles": vars(profiles), "flavour": rt.flavour, "trt_version": rt.version,
           "compute_capability": target_compute_capability(),
           "workspace_mib": spec.options.get("workspace_mib", 4096)}
    timing_cache = Path(spec.cache_dir) / kind / f"timing-{rt.flavour}-{rt.version}.cache"

    def build(tmp: Path) -> dict:
        return build_engine(rt, define_network, profiles, tmp / ENGINE_FILE, timing_cache,
                            spec.options.get("workspace_mib", 4096), kind)

    return get_or_build(spec.cache_dir, kind, key, build, log=say)
