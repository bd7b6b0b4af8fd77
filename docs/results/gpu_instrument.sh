#!/usr/bin/env bash
# Evidence for the sustained clock, per-cell memory and what the kernels read, on one GPU (an H200 is what is lent).
# Run from the repository root on the GPU machine after staging torchao with the other wheels
# (bash ../shared/gpu/stage.sh torchao==0.18.0; docs/results/README.md). About 6 minutes; every step has its own
# time limit (490 s in all at most), so a slow step cannot take the others' results with it. Validation is off
# (speed only); the accuracy of these configurations is in their earlier validate runs.
#   bash docs/results/gpu_instrument.sh OUT_DIR
# 1. HF int4 (reduce-overhead, SDPA) at 8 x 128 and 8 x 1024 through the harness, and the independent cross-check
#    (docs/results/crosscheck/plain_hf_decode_crosscheck.py: a plain compiled HF loop that takes every token to the
#    host) for the same two cells with the same cache length: decode_latency_ms p50 should agree with the
#    cross-check's synced_ms_per_token_p50 (and the old unsynced event time should not, at 8 x 1024).
# (The headline cells with the new timing, formerly step 2 here, are docs/results/gpu_headline.sh.)
# Each run directory is a harness run (results.csv, run.json, samples/), packed with the logs into OUT/instrument.tgz.
set -u
OUT=${1:?usage: gpu_instrument.sh OUT_DIR}
mkdir -p "$OUT/instrument"
R=$OUT/instrument
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 -c "import torchao" 2>/dev/null || echo "torchao is not importable: the HF int4 runs will refuse (stage it)"
TINY=(model=tinyllama-1.1b device=cuda measure.min_seconds=0.3 measure.overhead_steps=8 validation.enabled=false)
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "== 1. HF int4 8x128 and 8x1024, harness $(date -u +%T)"
  timeout 130 python3 -m harness "${TINY[@]}" backend=hf-flashattn-staticcache backend.attention=sdpa \
    backend.compile=reduce-overhead quant=int4 "grid.batch_sizes=[8]" "grid.prompt_lens=[128,1024]" \
    grid.new_tokens=32 output_dir="$R/hf_int4_b8" 2>&1 | grep -v "^W1\|Warning\|warn(" | tail -8
  # the harness's cache length: its largest prompt + new tokens (validation off)
  for p in 128 1024; do
    echo "== 1. cross-check int4 8x$p $(date -u +%T)"
    timeout 180 python3 docs/results/crosscheck/plain_hf_decode_crosscheck.py --quant int4 --batch 8 --prompt $p \
      --steps 32 --repeats 10 --max-cache 1056 --out "$R/crosscheck_int4_b8_p$p.csv" 2>&1 | grep -v "^W1\|Warning" | tail -2
  done
  echo "== comparison $(date -u +%T)"
  python3 - "$R" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

r = Path(sys.argv[1])
for p in (128, 1024):
    try:
        t = pd.read_csv(r / "hf_int4_b8" / "results.csv")
        c = pd.read_csv(r / f"crosscheck_int4_b8_p{p}.csv").iloc[0]
    except (OSError, IndexError) as exc:
        print(f"8x{p}: missing ({exc})")
        continue
    cell = t[(t.batch_size == 8) & (t.prompt_len == p)]
    get = lambda m: float(cell[cell.metric == m].p50.iloc[0])
    print(f"8x{p}: harness decode_latency_ms p50 {get('decode_latency_ms'):.3f}, decode_device_ms p50 "
          f"{get('decode_device_ms'):.3f}, host_bound '{cell.host_bound.fillna('').iloc[0]}' | cross-check synced "
          f"{c.synced_ms_per_token_p50:.3f}, unsynced events {c.unsynced_event_ms_per_step_p50:.3f}")
for run in ("hf_int4_b8",):
    try:
        t = pd.read_csv(r / run / "results.csv")
    except OSError:
        continue
    m = t[t.metric.isin(["decode_latency_ms", "decode_device_ms", "gpu_process_used_peak_mib",
                         "torch_allocated_peak_mib"])]
    print(run, m[["batch_size", "prompt_len", "metric", "p50", "host_bound"]].to_string(index=False))
EOF
} 2>&1 | tee "$R/instrument.log"
tar -C "$OUT" -czf "$OUT/instrument.tgz" instrument
