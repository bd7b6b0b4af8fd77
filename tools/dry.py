"""Per-step cost of the DRY sampler at context lengths 512, 2048 and 8192 (``python -m tools.dry``).

Timed by the harness's instrument (``harness.measure.instrument.time_calls``: device time over many back-to-back calls,
the way a decode loop issues them); on CUDA the calls run under ``torch.cuda.set_sync_debug_mode("error")``, which
raises if DRY synchronises with the host. Writes a CSV (``--out``) and prints it.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager, nullcontext

import torch

from harness.accuracy.sampling import apply_dry
from harness.measure.instrument import time_calls
from tools import print_and_save


@contextmanager
def no_host_sync():
    """Any host synchronisation inside raises (torch's sync debug mode)."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def time_dry(device: str, batch: int, context_len: int, vocab: int, iters: int) -> dict:
    gen = torch.Generator().manual_seed(context_len)
    # text-like context: a small alphabet makes repeats (and long matches) common, the worst case for DRY
    ctx = torch.randint(0, 64, (batch, context_len), generator=gen).to(device)
    logits = torch.randn(batch, vocab, generator=gen).to(device)
    kw = dict(multiplier=0.8, base=1.75, allowed_length=2, sequence_breakers=[0, 1], penalty_last_n=-1)
    for _ in range(3):
        apply_dry(logits, ctx, **kw)
    on_cuda = device.startswith("cuda")
    timed = time_calls(lambda: apply_dry(logits, ctx, **kw), iters, device,
                       around_calls=no_host_sync if on_cuda else nullcontext)
    host_sync = "none (sync debug mode = error)" if on_cuda else "n/a (cpu)"
    per_call_ms = timed["device_ms_per_call"]
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
