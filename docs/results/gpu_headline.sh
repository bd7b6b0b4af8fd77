#!/usr/bin/env bash
# The headline grid with the sustained clock (docs/report.md sections 4 and 5, docs/profiling.md): TinyLlama-1.1B
# (random weights, bf16), batch {1, 32} x prompt {128, 1024}, 64 new tokens, on one GPU:
#   hf-<attention>  HF backend, compile=reduce-overhead, attention sdpa | torch_flash | flash_attention_4
#   ort             ONNX Runtime, attention=gqa + fused ops + CUDA graphs
# Every cell is profiled after its timed iterations (measure.profile=true: kernels, busy time, host gap and
# categories per step, energy per token); validation is off (speed only; these configurations' accuracy is in
# their validate runs). Then `enginebench-report why` of HF (each attention) against ONNX Runtime.
# Run from the repository root on the GPU machine after staging (bash ../shared/gpu/stage.sh torchao==0.18.0):
#   bash docs/results/gpu_headline.sh OUT_DIR ["hf-sdpa hf-torch_flash hf-flash_attention_4 ort why"]
# BATCHES=32 PROMPTS=1024 narrow the grid (one device call may not hold all four cells of two configurations).
# Each step has its own time limit; a run lands in OUT_DIR/headline/<step>/ (results.csv, run.json, samples,
# profile/), its console beside it.
set -u
OUT=${1:?usage: gpu_headline.sh OUT_DIR [steps]}
STEPS=${2:-hf-sdpa hf-torch_flash hf-flash_attention_4 ort why}
R=$OUT/headline
mkdir -p "$R"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
GRID=(model=tinyllama-1.1b device=cuda "grid.batch_sizes=[${BATCHES:-1,32}]" "grid.prompt_lens=[${PROMPTS:-128,1024}]" grid.new_tokens=64
      validation.enabled=false measure.profile=true)
run() {  # run NAME LIMIT_S args...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s) $(date -u +%T)"
  timeout "$limit" python3 -m harness "${GRID[@]}" "$@" output_dir="$R/$name" > "$R/$name.log" 2>&1
  echo "   exit $? $(date -u +%T)"
  tail -12 "$R/$name.log"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  for step in $STEPS; do
    case $step in
      hf-*) run "$step" 280 backend=hf-flashattn-staticcache backend.compile=reduce-overhead \
              backend.attention="${step#hf-}" ;;
      ort) run ort 280 backend=onnxruntime backend.attention=gqa backend.fused_ops=true backend.cuda_graph=true ;;
      why) for hf in "$R"/hf-*/; do
             [ -f "$R/ort/results.csv" ] && [ -f "$hf/results.csv" ] || continue
             echo "== why $(basename "$hf") vs ort"
             python3 -m harness.report.cli why "$hf" "$R/ort" 2>&1 | tee "$R/why_$(basename "$hf")_vs_ort.txt"
           done ;;
    esac
  done
} 2>&1 | tee -a "$R/headline.log"
