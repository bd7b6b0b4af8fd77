"""The cached, validated ONNX artifact of a model: export once, check it, reuse it.

The cache key holds the model fingerprint (config + weights sample, or checkpoint path + mtimes), dtype, max_seq,
opset, the attention form, the export code's version and the torch / transformers / onnx versions: changing any of
them re-exports.
"""
from __future__ import annotations

import importlib.metadata as metadata
import time
from pathlib import Path
from typing import Any, Callable

import torch

from harness.sdk import Artifact, dtype_name, get_or_build, say, slow_work

EXPORT_VERSION = 4  # bump when graph.py / export.py / layerwise.py change what they produce
MODEL_FILE = "model.onnx"


def onnx_key(spec, attention: str = "explicit", fused_ops: bool = False) -> dict:
    versions = {p: metadata.version(p) for p in ("torch", "transformers", "onnx", "onnxscript")}
    from backends.onnx_export.export import OPSET

    return {"model": spec.model.fingerprint(), "dtype": dtype_name(spec.dtype), "max_seq": spec.max_seq,
            "opset": OPSET, "attention": attention, "fused_ops": fused_ops, "export_version": EXPORT_VERSION,
            "versions": versions}


def onnx_artifact(spec, attention: str = "explicit", fused_ops: bool = False,
                  check: Callable[[Path, Any, torch.dtype, str], dict] | None = None) -> Artifact:
    """``attention``: explicit (every ONNX consumer) or gqa (ONNX Runtime only; see graph.py); ``fused_ops``:
    ORT's other fused ops too (gqa only; see fused.py). ``check(onnx_path, model_source, dtype, device)`` runs the
    export against HF before it is cached and returns a dict with ``passed`` (the ORT backend's export_check);
    without one the export is cached unchecked, under a key of its own so that a checked export is never confused
    with it."""
    from backends.onnx_export.export import export_onnx
    from backends.onnx_export.graph import check_supported

    check_supported(spec.model.config(), spec.max_seq, attention, fused_ops)  # one line, before any export

    def build(tmp: Path) -> dict:
        what = (f"onnx: exporting {spec.model.name} ({dtype_name(spec.dtype)}, max_seq={spec.max_seq}, "
                f"{attention} attention{', fused ops' if fused_ops else ''})")
        work_key = f"onnx-export:{spec.model.name}:{dtype_name(spec.dtype)}:{spec.max_seq}:{attention}:{fused_ops}"
        with slow_work(spec.cache_dir, what + (" and checking it against HF" if check else ""), work_key) as timed:
            # Export from CPU in the target dtype: the graph is device independent, and CPU keeps GPU memory free.
            # float32: export the cached reference model itself (export reads it, never writes): saves a copy
            t0 = time.perf_counter()
            model = spec.model.build_fp32_cpu() if spec.dtype == torch.float32 \
                else spec.model.build(spec.dtype, "cpu")
            model_seconds = time.perf_counter() - t0
            meta = export_onnx(model, spec.max_seq, tmp / MODEL_FILE, attention, fused_ops)
            del model
            meta["model_build_seconds"] = model_seconds
            say(f"onnx: exported {meta['nodes']} nodes in {meta['export_seconds']:.1f} s")
            if check is None:
                meta["check"] = {"passed": None,
                                 "reason": "not checked (no checker given, e.g. ONNX Runtime missing)"}
            else:
                t0 = time.perf_counter()
                meta["check"] = check(tmp / MODEL_FILE, spec.model, spec.dtype, spec.device)
                meta["check_seconds"] = time.perf_counter() - t0
                if not meta["check"]["passed"]:
                    raise RuntimeError(f"exported graph disagrees with HF: {meta['check']}")
        meta["build_seconds"] = timed.seconds  # the whole wait before the artifact exists: build, export, check
        return meta

    key = onnx_key(spec, attention, fused_ops)
    if check is None:
        key["unchecked"] = True
    return get_or_build(spec.cache_dir, "onnx", key, build, log=say)
