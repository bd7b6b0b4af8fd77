"""Cross-check of the instrument: a plain compiled HF decode loop that shares no code with the harness, timed its
own way, to test that the harness's ``decode_latency_ms`` measures what a user waits for per token.

    python docs/results/crosscheck/plain_hf_decode_crosscheck.py --batch 8 --prompt 128 --quant int4 \
        --max-cache 1056 --out crosscheck_int4_b8_p128.csv

This is the one timer kept outside harness/measure/instrument.py, on purpose: an instrument is checked against an
independent one. The configuration copies the harness's HF backend in its int4 run (preset config, seeded random
weights, bfloat16, SDPA over a ``StaticCache``, ``torch.compile`` of the decode step, torchao's int4 weight-only
layout at group size 128), written out here from the libraries' own APIs. Per step it does what a serving loop
does: run the step, take the greedy token to the host, feed it back; the time per token is the wall-clock
interval between consecutive step starts (median over every step of ``--repeats`` runs, after two warm runs).
Next to it, the old way: CUDA events around each step with the host free to run ahead (no token taken), which is
what the harness reported before it timed sustained steps.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time

import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM, StaticCache


def build(preset: str, batch: int, max_cache: int, quant: str):
    hf = yaml.safe_load(open(preset))["hf_config"]
    config = AutoConfig.for_model(hf.pop("model_type"), **hf)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to("cuda", torch.bfloat16).eval()
    model.set_attn_implementation("sdpa")
    if quant == "int4":
        from torchao.quantization import Int4WeightOnlyConfig, quantize_

        quantize_(model.model, Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"))
    cache = StaticCache(config=config, max_cache_len=max_cache)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache.early_initialization(batch_size=batch, num_heads=config.num_key_value_heads, head_dim=head_dim,
                               dtype=torch.bfloat16, device=torch.device("cuda"))
    return config, model, cache


def captured(step, batch: int):
    """``step`` replayed from one CUDA graph: fixed token/position buffers, the increment of ``pos`` inside."""
    tok_buf = torch.zeros(batch, 1, dtype=torch.long, device="cuda")
    pos_buf = torch.zeros(batch, 1, dtype=torch.long, device="cuda")
    graph, out = None, None

    def run(tok, pos):
        nonlocal graph, out
        tok_buf.copy_(tok)
        pos_buf.copy_(pos)  # the loop keeps its own position counter
        if graph is None:
            with torch.no_grad():
                logits = step(tok_buf, pos_buf)  # compiles (outside any capture)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = step(tok_buf, pos_buf)
            return logits
        graph.replay()
        return out

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="conf/model/tinyllama-1.1b.yaml")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--compile", default="reduce-overhead", help="torch.compile mode (max-autotune: full graph "
                   "too, as the harness's backend.compile=max-autotune), or none")
    p.add_argument("--capture", action="store_true", help="compile without Inductor's CUDA-graph trees and capture "
                   "the step as one CUDA graph by hand (the harness's "
                   "backend.cuda_graph=true with compile)")
    p.add_argument("--quant", default="none", choices=["none", "int4"])
    p.add_argument("--max-cache", type=int, default=None,
                   help="static cache length (the harness's: its largest prompt + new tokens)")
    p.add_argument("--out", default=None, help="write the result row as CSV")
    args = p.parse_args()
    max_cache = args.max_cache or args.prompt + args.steps
    config, model, cache = build(args.preset, args.batch, max_cache, args.quant)

    def decode(tok, pos):
        return model(input_ids=tok, position_ids=pos, past_key_values=cache, use_cache=True).logits[:, -1]

    step = decode
    if args.compile != "none":  # max-autotune as gpt-fast uses it: the whole step as one graph
        mode = "max-autotune-no-cudagraphs" if args.capture and args.compile == "max-autotune" else args.compile
        step = torch.compile(decode, mode=mode, fullgraph=args.compile == "max-autotune")
    if args.capture:
        step = captured(step, args.batch)
    ids = torch.randint(3, config.vocab_size, (args.batch, args.prompt), device="cuda")

    def prefill():
        cache.reset()
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]
        return logits, torch.full((args.batch, 1), args.prompt, device="cuda")

    synced, unsynced = [], []
    with torch.no_grad():
        for r in range(args.repeats + 2):
            logits, pos = prefill()
            tok = logits.argmax(-1, keepdim=True).cpu().cuda()
            starts = [time.perf_counter()]
            for _ in range(args.steps):
                logits = step(tok, pos).clone()
                pos += 1
                tok = logits.argmax(-1, keepdim=True).cpu().cuda()  # the token to the host and back
                starts.append(time.perf_counter())
            if r >= 2:
                synced += [(b - a) * 1e3 for a, b in zip(starts, starts[1:])]
            logits, pos = prefill()
            events = [torch.cuda.Event(enable_timing=True) for _ in range(args.steps + 1)]
            events[0].record()
            for i in range(args.steps):
                logits = step(logits.argmax(-1, keepdim=True), pos).clone()
                pos += 1
                events[i + 1].record()
            events[-1].synchronize()
            if r >= 2:
                unsynced += [a.elapsed_time(b) for a, b in zip(events, events[1:])]
    row = {"model": args.preset, "quant": args.quant, "compile": args.compile, "batch": args.batch,
           "capture": args.capture, "prompt": args.prompt, "steps": args.steps, "repeats": args.repeats,
           "max_cache": max_cache,
           "synced_ms_per_token_p50": statistics.median(synced),
           "unsynced_event_ms_per_step_p50": statistics.median(unsynced),
           "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(row)
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)


if __name__ == "__main__":
    main()
