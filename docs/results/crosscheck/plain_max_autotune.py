"""The instrument's cross-check: a plain HF decode loop with ``torch.compile(mode="max-autotune")`` and its own
simple timing, no harness code at all. If the harness's HF backend (``backend.compile=max-autotune``) and this
script disagree by more than a few percent on the same machine in the same sitting, one of the two is wrong.

    python3 docs/results/crosscheck/plain_max_autotune.py --preset conf/model/tinyllama-1.1b.yaml --max-cache 192

The same model construction as the harness (the preset's config, seeded random weights, bf16), an HF
``StaticCache`` of ``--max-cache`` slots (give it the harness run's ``backend_info.static_cache_len`` to compare
like with like), an unpadded prompt, then ``--steps`` greedy decode steps timed together between two CUDA events
(so each step's time here includes the argmax that feeds the next token; the harness times the decode call alone).
torch's ``max-autotune`` mode: CUDA graphs, GEMM autotuning and coordinate-descent tuning of Inductor's kernels;
``fullgraph=True`` as in gpt-fast. Prints the median ms per step over ``--repeats`` runs after two warm-up runs.
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
    p.add_argument("--compile", default="max-autotune", help="torch.compile mode, or none")
    p.add_argument("--max-cache", type=int, default=None, help="static cache length (default prompt + steps)")
    args = p.parse_args()
    hf = yaml.safe_load(open(args.preset))["hf_config"]
    config = AutoConfig.for_model(hf.pop("model_type"), **hf)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to("cuda", torch.bfloat16).eval()
    cache = StaticCache(config=config, max_cache_len=args.max_cache or args.prompt + args.steps)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache.early_initialization(batch_size=args.batch, num_heads=config.num_key_value_heads, head_dim=head_dim,
                               dtype=torch.bfloat16, device=torch.device("cuda"))

    def decode(tok, pos):  # tok, pos: [B, 1]
        return model(input_ids=tok, position_ids=pos, past_key_values=cache, use_cache=True).logits[:, -1]

    step = decode
    if args.compile != "none":
        step = torch.compile(decode, mode=args.compile, fullgraph=args.compile == "max-autotune")
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
                logits = step(logits.argmax(-1, keepdim=True), pos).clone()  # graph outputs are reused
                pos += 1
            end.record()
            end.synchronize()
            if r >= 2:
                per_step.append(start.elapsed_time(end) / args.steps)
    print(f"cross-check plain HF {args.compile}: {args.preset} batch {args.batch} prompt {args.prompt} "
          f"cache {cache.max_cache_len}: median {statistics.median(per_step):.3f} ms/step "
          f"(min {min(per_step):.3f}, {args.repeats} runs of {args.steps} steps) on {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
