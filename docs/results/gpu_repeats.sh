#!/usr/bin/env bash
# Verdicts on repeated runs (docs/statistics.md), in one sitting on one GPU: configuration A x10 repeats interleaved
# with configuration B x10 (ONNX Runtime gqa + fused ops, with and without CUDA-graph replay; each repeat a fresh
# worker process), then from those runs the A/A false-verdict rates of the old rule, the within-run rule and the
# between-runs rule, and the A/B verdict (tools/repeat_evidence.py; it times nothing itself).
# Usage, on the GPU machine from the repository root (wheels staged as for gpu_session.sh):
#   OUT=/tmp/enginebench-repeats bash docs/results/gpu_repeats.sh
# Writes $OUT/runs (the multirun and its report), $OUT/evidence (evidence.md, evidence.csv, report/) and $OUT/*.log.
set -uo pipefail
export PYTHONPATH=/root/gpu-site:/root/gpu-site/nvidia_cutlass_dsl/dsl_packages:$PWD ENGINEBENCH_CACHE_DIR=/root/ebcache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/enginebench-repeats}; mkdir -p "$OUT"
timeout "${LIMIT:-420}" python3 -m harness -m model=tinyllama-1.1b device=cuda backend=onnxruntime \
  backend.attention=gqa backend.fused_ops=true backend.cuda_graph=true,false grid.batch_sizes=[1,8] \
  grid.prompt_lens=[128] grid.new_tokens=64 measure.repeats="${REPEATS:-10}" measure.min_iters=10 \
  measure.min_seconds=0 validation.enabled=false isolation=process hydra.sweep.dir="$OUT/runs" \
  > "$OUT/runs.log" 2>&1
echo "multirun exit status $? (124: stopped by the time limit; the evidence then uses the repeats that finished)"
tail -n 3 "$OUT/runs.log"
python3 -m tools.repeat_evidence "$OUT/runs" --out "$OUT/evidence" 2>&1 | tee "$OUT/evidence.log"
