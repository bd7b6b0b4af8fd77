"""Per-step cost of the DRY sampler at context lengths 512, 2048 and 8192 (``python -m tools.dry``).

On CUDA the calls are timed with CUDA events over many back-to-back calls (the way a decode loop issues them)
and run under ``torch.cuda.set_sync_debug_mode("error")``, which raises if DRY synchronises with the host.
Writes a CSV (``--out``) and prints it.
"""
from __future__ import annotations

import argparse
import time

import torch

from harness.sampling import apply_dry
from tools import print_and_save


def time_dry(device: str, batch: int, context_len: int, vocab: int, iters: int) -> dict:
    gen = torch.Generator().manual_seed(context_len)
    # text-like context: a small alphabet makes repeats (and long matches) common, the worst case for DRY
    ctx = torch.randint(0, 64, (batch, context_len), generator=gen).to(device)
    logits = torch.randn(batch, vocab, generator=gen).to(device)
    kw = dict(multiplier=0.8, base=1.75, allowed_length=2, sequence_breakers=[0, 1], penalty_last_n=-1)
    for _ in range(3):
        apply_dry(logits, ctx, **kw)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host sync inside apply_dry raises
        try:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                apply_dry(logits, ctx, **kw)
            end.record()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        end.synchronize()
        per_call_ms = start.elapsed_time(end) / iters
        host_sync = "none (sync debug mode = error)"
    else:
        t0 = time.perf_counter()
        for _ in range(iters):
            apply_dry(logits, ctx, **kw)
        per_call_ms = (time.perf_counter() - t0) * 1e3 / iters
        host_sync = "n/a (cpu)"
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    return {"device": name, "batch": batch, "context_len": context_len, "vocab": vocab, "iters": iters,
            "dry_ms_per_step": per_call_ms, "host_sync": host_sync, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--context", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = [time_dry(args.device, b, c, args.vocab, args.iters) for b in args.batch for c in args.context]
    print_and_save(rows, args.out)


if __name__ == "__main__":
    main()
