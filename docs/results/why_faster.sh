#!/usr/bin/env bash
# GPU evidence for docs/profiling.md: where a TinyLlama decode step's time goes in HF reduce-overhead and in ONNX
# Runtime's GroupQueryAttention graph with its fused ops and CUDA-graph replay, at batch 1 and 32 (prompt 128), each
# cell profiled after its timed iterations (measure.profile=true), with energy per prefill and decode token; then
# the diff of the two (enginebench-report why) and the report. Run from the repository root on the GPU machine
# (after the wheels of ../shared/gpu/stage.sh are installed and . /root/gpu-env.sh); about 5 minutes on an H200.
set -euo pipefail
OUT=${OUT:-/tmp/enginebench-gpu}; mkdir -p "$OUT/runs"
GRID="model=tinyllama-1.1b device=cuda grid.batch_sizes=[1,32] grid.prompt_lens=[128] grid.new_tokens=64
      validation.enabled=false measure.profile=true"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -m harness $GRID backend=hf-flashattn-staticcache backend.compile=reduce-overhead output_dir=$OUT/runs/hf_ro
python3 -m harness $GRID backend=onnxruntime backend.attention=gqa backend.fused_ops=true backend.cuda_graph=true \
  output_dir=$OUT/runs/ort_gqa_fused_graph
python3 -m harness.report.cli why $OUT/runs/hf_ro $OUT/runs/ort_gqa_fused_graph | tee $OUT/why.txt
python3 -m harness.report.cli $OUT/runs/hf_ro $OUT/runs/ort_gqa_fused_graph --out $OUT/report
