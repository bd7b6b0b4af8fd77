"""A plain script (no harness): HF model + StaticCache + torch.compile(reduce-overhead) decode, timed with CUDA
events — the yardstick for the harness's own numbers (``python -m tools.plain_hf_decode``).

Same model construction as the harness (preset config, seeded random weights, bf16), batch 1, prompt 128,
64 decode steps; prints the median ms per decode step over repeated runs.
"""
from __future__ import annotations

import argparse
import statistics

import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM, StaticCache


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="conf/model/tinyllama-1.1b.yaml")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--compile", default="reduce-overhead")
    p.add_argument("--max-cache", type=int, default=None,
                   help="static cache length (default prompt + steps; the harness preallocates for its largest cell)")
    args = p.parse_args()
    hf = yaml.safe_load(open(args.preset))["hf_config"]
    config = AutoConfig.for_model(hf.pop("model_type"), **hf)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to("cuda", torch.bfloat16).eval()
    cache = StaticCache(config=config, max_cache_len=args.max_cache or args.prompt + args.steps)
    head_dim = config.hidden_size // config.num_attention_heads
    cache.early_initialization(batch_size=args.batch, num_heads=config.num_key_value_heads, head_dim=head_dim,
                               dtype=torch.bfloat16, device=torch.device("cuda"))

    def decode(tok, pos):
        return model(input_ids=tok, position_ids=pos, past_key_values=cache, use_cache=True).logits[:, -1]

    step = torch.compile(decode, mode=args.compile) if args.compile != "none" else decode
    ids = torch.randint(3, config.vocab_size, (args.batch, args.prompt), device="cuda")
    per_step = []
    with torch.no_grad():
        for r in range(args.repeats + 2):
            cache.reset()
            logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]
            pos = torch.full((args.batch, 1), args.prompt, device="cuda")
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(args.steps):
                logits = step(logits.argmax(-1, keepdim=True), pos).clone()
                pos += 1
            end.record()
            end.synchronize()
            if r >= 2:
                per_step.append(start.elapsed_time(end) / args.steps)
    print(f"plain HF {args.compile}: batch {args.batch} prompt {args.prompt} cache {cache.max_cache_len}: "
          f"median {statistics.median(per_step):.3f} ms/step (min {min(per_step):.3f}) "
          f"on {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
