"""Prefill and decode-step latency of ``hf-flashattn-staticcache`` per attention choice and compile mode, through
the backend's own hooks (``python -m tools.hf_attention``; GPU only).

Leaner than a harness sweep, to fit many cells into little GPU time: the model is built once per (attention,
compile) and the cache sized for the largest cell, as the harness does. Per cell (batch x prompt): one warm-up and
``--prefills`` timed prefills (CUDA events; peak allocated memory above the loaded model), then ``--warm-steps``
decode steps (torch.compile and CUDA-graph capture happen there) and ``--steps`` timed decode steps. Medians.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys

import torch

from harness.inputs import random_prompt_ids
from harness.loadspec import LoadSpec
from harness.plugins import PluginRegistry
from tools import load_preset

BACKEND = "hf-flashattn-staticcache"


def timed(fn) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def run_cells(handle, config, batches, prompts, args, base_mib) -> list[dict]:
    rows = []
    for batch in batches:
        for prompt in prompts:
            ids = random_prompt_ids(config, batch, prompt, seed=prompt).cuda()
            prefill_ms, peak = [], 0.0
            for i in range(args.prefills + 1):
                handle.reset_kv()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                ms = timed(lambda ids=ids: handle.prefill(input_ids=ids, prompt_lens=None))
                peak = max(peak, torch.cuda.max_memory_allocated() / 2**20 - base_mib)
                if i:
                    prefill_ms.append(ms)
            tok = ids[:, -1:].contiguous()
            for _ in range(args.warm_steps):
                handle.decode_step(tokens=tok)
            decode_ms = [timed(lambda tok=tok: handle.decode_step(tokens=tok)) for _ in range(args.steps)]
            rows.append({"batch": batch, "prompt": prompt, "prefill_ms_p50": round(statistics.median(prefill_ms), 3),
                         "decode_ms_p50": round(statistics.median(decode_ms), 4),
                         "prefill_peak_mib": round(peak, 1)})
            print(f"  b{batch} p{prompt}: prefill {rows[-1]['prefill_ms_p50']} ms, decode "
                  f"{rows[-1]['decode_ms_p50']} ms, peak {rows[-1]['prefill_peak_mib']} MiB", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tinyllama-1.1b")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--prompt", type=int, nargs="+", default=[128, 1024, 1984])
    p.add_argument("--attention", nargs="+", default=["sdpa", "torch_flash", "flash_attention_4"])
    p.add_argument("--compile", nargs="+", default=["none", "reduce-overhead"])
    p.add_argument("--prefills", type=int, default=3)
    p.add_argument("--warm-steps", type=int, default=4)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    source = load_preset(args.model)
    registry = PluginRegistry.discover()
    max_seq = max(args.prompt) + args.warm_steps + args.steps + 8
    written = 0
    for compile_mode in args.compile:
        for attention in args.attention:
            print(f"{args.model} attention={attention} compile={compile_mode}", flush=True)
            handle = registry.open(BACKEND)
            try:
                opts = {**registry.defaults(BACKEND), "attention": attention, "compile": compile_mode}
                torch.cuda.empty_cache()
                info = handle.load(spec=LoadSpec(model=source, dtype=torch.bfloat16, device="cuda", options=opts,
                                                 max_batch=max(args.batch), max_seq=max_seq))
                base = torch.cuda.memory_allocated() / 2**20
                cells = run_cells(handle, source.config(), args.batch, args.prompt, args, base)
                error = ""
            except Exception as exc:  # noqa: BLE001 - one failed choice must not lose the others' numbers
                cells, info, error = [{}], {}, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                print("  failed:", error, flush=True)
            finally:
                handle.close()
            rows = [{"model": args.model, "attention": attention, "compile": compile_mode, "batch": "", "prompt": "",
                     "prefill_ms_p50": "", "decode_ms_p50": "", "prefill_peak_mib": "", **cell,
                     "kernel_prefill": info.get("attention_kernel_prefill", ""),
                     "kernel_decode": info.get("attention_kernel_decode", ""), "max_seq": max_seq,
                     "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "error": error,
                     "backend_info": json.dumps(info)} for cell in cells]
            with open(args.out, "a", newline="") as f:  # appended per choice: a cut-off run keeps what finished
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                if f.tell() == 0:
                    writer.writeheader()
                writer.writerows(rows)
            written += len(rows)
    print(f"wrote {written} rows to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
