"""Where a decode step of a backend spends its time, per kernel (``python -m tools.profile_decode``).

A target missed by a latency table needs a profile, not a guess: this runs a backend's own hooks (load, prefill,
decode steps), records ``--steps`` decode steps with ``torch.profiler`` and reports, per kernel, how many times it
ran per step, its device time per step and its share of the step's kernel time. CUPTI records every kernel of the
process, so ONNX Runtime's kernels appear as well as torch's. Next to that, the wall time per step, timed over as
many steps again without the profiler (its own overhead would inflate it), says whether the step is bound by the
GPU (kernel time close to wall time) or by the host launching it. Without CUDA graphs by default (HF: compile
``none``; ORT: ``cuda_graph`` false), so the table shows each kernel the host launches; ``--set`` overrides that
(``compile=default``: the compiled kernels without graphs; ``compile=reduce-overhead``: the replayed step, whose
kernels CUPTI still records on torch 2.11 / CUDA 13 — docs/results/h100/quant/profile_quant_hf_ro_b1.csv — so wall
against kernel time shows the host time around the replay). On a CPU the table holds the operators' CPU self time
(to test the tool, not for numbers). The profile itself is the harness's (harness/profile/capture.py), the one
``enginebench measure.profile=true`` takes after every cell; this tool adds the choices it loops over.
"""
from __future__ import annotations

import argparse
import dataclasses

import pandas as pd
import torch
import yaml

from harness.accuracy.inputs import random_prompt_ids
from harness.measure.instrument import time_calls
from harness.model.quant import resolve
from harness.plugin.loadspec import LoadSpec
from harness.plugin.plugins import PluginRegistry
from harness.profile.capture import profile_phase
from harness.profile.categories import categorizer
from tools import load_preset, print_and_save

WARM_STEPS = 4


def profile_steps(handle, tokens: torch.Tensor, steps: int, on_cuda: bool) -> tuple[list[dict], float]:
    """(rows per operator/kernel for ``steps`` profiled decode steps, wall milliseconds per unprofiled step).
    The profile is the harness's (harness/profile/capture.py: kernels only on CUDA, a backend's own profiler
    where torch's sees nothing), with each kernel's category (harness/profile/categories.py)."""
    device = "cuda" if on_cuda else "cpu"
    wall_ms = time_calls(lambda: handle.decode_step(tokens=tokens), steps, device)["sustained_ms_per_call"]

    def run():
        for _ in range(steps):
            handle.decode_step(tokens=tokens)

    phase = profile_phase("decode", run, steps, device, handle,
                          categorizer(lambda name: handle.kernel_category(name=name)), None)
    total = sum(r["us_per_step"] for r in phase.table()) or 1.0
    rows = [{"name": r["name"][:120], "category": r["category"], "calls_per_step": round(r["calls_per_step"], 2),
             "us_per_step": round(r["us_per_step"], 2), "share": round(r["us_per_step"] / total, 4)}
            for r in phase.table()]
    return rows, wall_ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="llama-3.2-1b")
    p.add_argument("--backend", default="hf-flashattn-staticcache")
    p.add_argument("--attention", nargs="+", default=["torch_flash", "flash_attention_4"],
                   help="values of the backend's attention option, one profile each")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other backend options")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, nargs="+", default=[128, 8192])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--quant", nargs="+", default=["none"],
                   help="weight-only schemes (harness/model/quant.py), each with its default group and symmetry")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--top", type=int, default=12, help="rows printed per (attention, prompt); the CSV keeps all")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    source = load_preset(args.model)
    registry = PluginRegistry.discover()
    max_seq = max(args.prompt) + WARM_STEPS + 2 * args.steps + 8  # warm-up, timed and profiled steps
    extra = dict(_option(kv) for kv in args.set)
    rows: list[dict] = []
    for attention in args.attention:
        for quant in args.quant:
            spec = LoadSpec(model=source, dtype=getattr(torch, args.dtype), device=args.device, options={},
                            max_batch=args.batch, max_seq=max_seq,
                            quant=resolve(quant, None, None, source.config()))
            rows += profile_choice(registry, spec, attention, args, extra)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"wrote {len(rows)} rows to {args.out}")


def _option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, yaml.safe_load(value)


def profile_choice(registry, spec: LoadSpec, attention: str, args, extra: dict) -> list[dict]:
    """Rows of one (attention, quant) choice, for each prompt length, printing the top of each table."""
    on_cuda = args.device.startswith("cuda")
    rows: list[dict] = []
    defaults = registry.defaults(args.backend)
    no_graphs = {k: v for k, v in (("compile", "none"), ("cuda_graph", False)) if k in defaults}
    options = {**defaults, **no_graphs, "attention": attention, **extra}
    handle = registry.open(args.backend)
    try:
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
            print(f"{args.model} {args.backend} {attention} {' '.join(args.set)} quant={spec.quant.scheme} "
                  f"b{args.batch} p{prompt}: wall {wall_ms:.3f} ms/step, "
                  f"{'kernels' if on_cuda else 'cpu self'} {kernel_ms:.3f} ms/step "
                  f"(decode kernel: {info.get('attention_kernel_decode', '?')})", flush=True)
            head = {"model": args.model, "backend": args.backend, "options": " ".join(args.set), "attention": attention,
                    "quant": spec.quant.scheme, "batch": args.batch,
                    "prompt": prompt, "wall_ms_per_step": round(wall_ms, 4), "device_ms_per_step": round(kernel_ms, 4)}
            rows += [{**head, **cell} for cell in cells]
            print_and_save([{k: c[k] for k in ("name", "category", "calls_per_step", "us_per_step", "share")}
                            for c in cells[:args.top]], None)
    finally:
        handle.close()
    return rows


if __name__ == "__main__":
    main()
