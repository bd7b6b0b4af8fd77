"""ONNX Runtime's own profiler, per decode step, at a fixed fill, for exports that differ only in the preallocated
length (``python -m tools.ort_inplace --max-seq 1088 2048 [--attention gqa [--fused-ops]] [--quant int4]``).

What it reports are ORT's per-node ``_kernel_time`` events: on the CUDA EP these are host-side times of each node's
launch, not GPU kernel durations, so they give the node count and where the host spends a step, not GPU time (an
asynchronous full-cache copy would be launched, not waited for). GPU kernel times per step come from
``tools/profile_decode.py --backend onnxruntime``, which records ORT's kernels through CUPTI.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from harness.accuracy.inputs import random_prompt_ids
from harness.model.quant import resolve
from harness.model.sources import ModelSource
from harness.plugin.loadspec import LoadSpec
from tools import print_and_save


def profile(max_seq: int, batch: int, fill: int, steps: int, preset: str, cache_dir: Path,
            attention: str = "explicit", fused_ops: bool = False, quant: str = "none") -> dict:
    from backends.onnx_export.artifact import MODEL_FILE, onnx_artifact
    from backends.onnx_export.quantize import quantized_onnx_artifact
    from backends.onnxruntime_backend.runner import OrtStaticCacheRunner

    source = ModelSource.from_config(yaml.safe_load(open(preset)), 0)
    scheme = resolve(quant, None, None, source.config())
    spec = LoadSpec(model=source, dtype=torch.bfloat16, device="cuda:0", options={}, max_batch=batch,
                    max_seq=max_seq, cache_dir=cache_dir, quant=scheme)
    artifact = onnx_artifact(spec, attention, fused_ops)
    if scheme.enabled:  # the backend's own MatMulNBits artifact of that graph (onnxruntime_backend/plugin.py)
        artifact = quantized_onnx_artifact(spec, artifact, scheme)
    path = str(artifact.directory / MODEL_FILE)
    runner = OrtStaticCacheRunner(path, source.config(), torch.bfloat16, "cuda:0", batch)
    ids = random_prompt_ids(source.config(), batch, fill, 0).cuda()
    runner.prefill(ids, None)
    tok = ids[:, -1:]
    for _ in range(3):  # warm-up outside the profile
        runner.decode(tok)
    so_path = _profiled_session(runner, path)
    runner.reset()
    runner.prefill(ids, None)
    for _ in range(steps):
        runner.decode(tok)
    torch.cuda.synchronize()
    events = json.loads(Path(runner.session.end_profiling()).read_text())
    del so_path
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    prefill_end = runs[0]["ts"] + runs[0]["dur"]  # the first run in the profile is the prefill
    decode_nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                    and e["ts"] > prefill_end]
    by_op: dict[str, float] = {}
    for e in decode_nodes:
        by_op[e["args"].get("op_name", "?")] = by_op.get(e["args"].get("op_name", "?"), 0.0) + e["dur"] / steps
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:6]
    return {"attention": attention, "fused_ops": fused_ops, "quant": quant, "max_seq": max_seq, "batch": batch,
            "fill": fill,
            "scatter_us_per_step": by_op.get("ScatterND", 0.0),
            "all_nodes_us_per_step": sum(by_op.values()), "nodes_per_step": len(decode_nodes) / steps,
            "top_ops_us_per_step": "; ".join(f"{op} {us:.0f}" for op, us in top), "gpu": torch.cuda.get_device_name()}


def _profiled_session(runner, path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.log_severity_level = 3
    stream = torch.cuda.current_stream().cuda_stream
    runner.session = ort.InferenceSession(path, so, providers=[("CUDAExecutionProvider", {
        "user_compute_stream": str(stream)})])
    return so


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-seq", type=int, nargs="+", default=[1088, 2048])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--fill", type=int, default=128)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--preset", default="conf/model/tinyllama-1.1b.yaml")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "enginebench"))
    p.add_argument("--attention", default="explicit", choices=["explicit", "gqa"])
    p.add_argument("--fused-ops", action="store_true", help="the gqa graph with ORT's other fused ops (fused.py)")
    p.add_argument("--quant", nargs="+", default=["none"], help="weight-only schemes (MatMulNBits), default settings")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows = [profile(m, b, args.fill, args.steps, args.preset, Path(args.cache_dir), args.attention,
                       args.fused_ops, q)
            for q in args.quant for m in args.max_seq for b in args.batch]
    print_and_save(rows, args.out)


if __name__ == "__main__":
    main()
