"""Where a decode step of ``hf-flashattn-staticcache`` spends its time, per kernel (``python -m tools.profile_decode``).

A target missed by a latency table needs a profile, not a guess: this runs the backend's own hooks (load, prefill,
decode steps) uncompiled, records ``--steps`` decode steps with ``torch.profiler`` and reports, per operator or
kernel, how many times it ran and how much device time it took per step, and its share of the step's kernel time.
Next to that, the wall time per step, timed over as many steps again without the profiler (its own overhead would
inflate it), says whether the step is bound by the GPU (kernel time close to wall time) or by the host launching
it. Uncompiled on purpose: inside a CUDA graph the profiler sees one graph launch, not the kernels. On a CPU the
same table holds CPU self time (useful to test the tool, not for numbers).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from harness.inputs import random_prompt_ids
from harness.loadspec import LoadSpec
from harness.plugins import PluginRegistry
from harness.quant import resolve
from tools import load_preset, print_and_save

BACKEND = "hf-flashattn-staticcache"
WARM_STEPS = 4


def _device_us(event, on_cuda: bool) -> float:
    """Self time of one aggregated profiler event on the device that ran it, in microseconds."""
    if on_cuda:
        return float(getattr(event, "self_device_time_total", 0.0) or getattr(event, "self_cuda_time_total", 0.0))
    return float(event.self_cpu_time_total)


def profile_steps(handle, tokens: torch.Tensor, steps: int, on_cuda: bool) -> tuple[list[dict], float]:
    """(rows per operator/kernel for ``steps`` profiled decode steps, wall milliseconds per unprofiled step)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        handle.decode_step(tokens=tokens)
    sync()
    wall_ms = (time.perf_counter() - start) * 1e3 / steps
    with profile(activities=activities) as prof:
        for _ in range(steps):
            handle.decode_step(tokens=tokens)
        sync()
    events = prof.key_averages()
    # On CUDA keep what ran on the GPU (kernels, memcpy/memset); the CPU-side operators carry no device self time.
    timed = [(e.key, e.count, _device_us(e, on_cuda)) for e in events]
    timed = [t for t in timed if t[2] > 0]
    total = sum(t[2] for t in timed) or 1.0
    rows = [{"name": name[:120], "calls_per_step": round(count / steps, 2), "us_per_step": round(us / steps, 2),
             "share": round(us / total, 4)} for name, count, us in sorted(timed, key=lambda t: -t[2])]
    return rows, wall_ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="llama-3.2-1b")
    p.add_argument("--attention", nargs="+", default=["torch_flash", "flash_attention_4"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, nargs="+", default=[128, 8192])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--quant", nargs="+", default=["none"],
                   help="weight-only schemes (harness/quant.py), each with its default group and symmetry")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--top", type=int, default=12, help="rows printed per (attention, prompt); the CSV keeps all")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    source = load_preset(args.model)
    registry = PluginRegistry.discover()
    max_seq = max(args.prompt) + WARM_STEPS + 2 * args.steps + 8  # warm-up, timed and profiled steps
    rows: list[dict] = []
    for attention in args.attention:
        for quant in args.quant:
            spec = LoadSpec(model=source, dtype=getattr(torch, args.dtype), device=args.device, options={},
                            max_batch=args.batch, max_seq=max_seq,
                            quant=resolve(quant, None, None, source.config()))
            rows += profile_choice(registry, spec, attention, args)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"wrote {len(rows)} rows to {args.out}")


def profile_choice(registry, spec: LoadSpec, attention: str, args) -> list[dict]:
    """Rows of one (attention, quant) choice, for each prompt length, printing the top of each table."""
    on_cuda = args.device.startswith("cuda")
    rows: list[dict] = []
    handle = registry.open(BACKEND)
    try:
        options = {**registry.defaults(BACKEND), "attention": attention, "compile": "none"}
        info = handle.load(spec=dataclasses.replace(spec, options=options))
        for prompt in args.prompt:
            ids = random_prompt_ids(spec.model.config(), args.batch, prompt, seed=prompt).to(args.device)
            handle.reset_kv()
            handle.prefill(input_ids=ids, prompt_lens=None)
            tokens = ids[:, -1:].contiguous()
            for _ in range(WARM_STEPS):  # warm-up: first-call work (kernel JIT, allocator) out of the profile
                handle.decode_step(tokens=tokens)
            cells, wall_ms = profile_steps(handle, tokens, args.steps, on_cuda)
            kernel_ms = sum(c["us_per_step"] for c in cells) / 1e3
            print(f"{args.model} {attention} quant={spec.quant.scheme} b{args.batch} p{prompt}: wall {wall_ms:.3f} "
                  f"ms/step, {'kernels' if on_cuda else 'cpu self'} {kernel_ms:.3f} ms/step "
                  f"(decode kernel: {info.get('attention_kernel_decode', '?')})", flush=True)
            head = {"model": args.model, "attention": attention, "quant": spec.quant.scheme, "batch": args.batch,
                    "prompt": prompt, "wall_ms_per_step": round(wall_ms, 4), "device_ms_per_step": round(kernel_ms, 4)}
            rows += [{**head, **cell} for cell in cells]
            print_and_save([{k: c[k] for k in ("name", "calls_per_step", "us_per_step", "share")}
                            for c in cells[:args.top]], None)
    finally:
        handle.close()
    return rows


if __name__ == "__main__":
    main()
