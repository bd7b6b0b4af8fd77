"""The check an ONNX export passes before it is cached: ONNX Runtime logits against HF float32 on the same inputs
(prefill of two left-padded rows, then a few decode steps), within the dtype's tolerance.

It lives with the ORT backend (it runs the ORT runner) and is handed to ``onnx_artifact`` by its callers, so that
the export package never imports ONNX Runtime: a TensorRT engine can be built from the export where ORT is not
installed (the export is then cached unchecked under its own key, and the engine is validated like any backend).
"""
from __future__ import annotations

import torch

from backends.onnxruntime_backend.runner import OrtStaticCacheRunner
from harness.sdk import compare, left_pad, random_prompt_ids, reference_greedy

CHECK_STEPS = 4


def ort_export_check():
    """``check_against_hf`` when ONNX Runtime is installed, else None (the export is cached unchecked)."""
    import importlib.util

    return check_against_hf if importlib.util.find_spec("onnxruntime") is not None else None


def check_against_hf(onnx_path, source, dtype, device: str = "cpu") -> dict:
    """``device``: the job's device; a CUDA job checks there when the CPU EP lacks the dtype (never on another
    job's GPU)."""
    config = source.config()
    rows = [random_prompt_ids(config, 1, n, seed=n)[0] for n in (6, 3)]
    ids, lens = left_pad(rows)
    ref_tokens, ref_logits = reference_greedy(source.build_fp32_cpu(), rows, CHECK_STEPS)
    provider = "cpu"
    try:
        runner = OrtStaticCacheRunner(str(onnx_path), config, dtype, "cpu", 2)
    except Exception as exc:  # noqa: BLE001 - e.g. bf16 kernels missing on the CPU EP
        if not torch.cuda.is_available():
            raise
        provider = f"cuda (CPU EP refused {dtype}: {type(exc).__name__})"
        gpu = device if device.startswith("cuda") else "cuda:0"
        runner = OrtStaticCacheRunner(str(onnx_path), config, dtype, gpu, 2)
    dev = runner.device
    logits = [runner.prefill(ids.to(dev), lens.to(dev)).float().cpu()]
    for k in range(CHECK_STEPS - 1):
        logits.append(runner.decode(ref_tokens[:, k:k + 1].to(dev)).float().cpu())
    got = torch.stack(logits, 1)
    result = compare("export_check", ref_tokens, ref_logits, got, got.argmax(-1), dtype)
    return {"provider": provider, "max_abs_diff": result.max_abs_diff, "top1_agreement": result.top1_agreement,
            "tolerance": result.tolerance, "passed": result.passed, "reason": result.reason}
