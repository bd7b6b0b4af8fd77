#!/usr/bin/env bash
# Weight-only quantization on the GPU machine: TinyLlama-1.1B (random weights), bfloat16 activations, the two
# backends that execute there (HF with reduce-overhead, ONNX Runtime's fused GQA graph with CUDA graphs), each at
# quant=none,int4,int8, batch 1/8/32 x prompt 128/1024 (the grid), 32 new tokens.
#
# Usage, from the project root on the GPU machine after staging torchao with the other wheels
# (GPU_STAGE_CACHE=... bash ../shared/gpu/stage.sh torchao==0.18.0; docs/results/README.md):
#   [QUANTS="none int4 int8"] [BATCHES=1,8,32] [PROMPTS=128,1024] [EXTRA="key=value ..."] \
#     bash docs/results/gpu_quant.sh OUT_DIR [hf|ort|all] [SECONDS_PER_JOB]
# One harness run per (backend, scheme), each under its own time limit, so a slow scheme cannot take the others'
# numbers with it; a cut-off run keeps the cells it finished (results are written per cell). The run directories
# and each run's whole console output are packed into OUT_DIR/quant_<step>.tgz (the device tool brings back few
# files); the step's log sits beside it.
set -u
OUT=${1:?usage: gpu_quant.sh OUT_DIR [hf|ort|all] [SECONDS_PER_JOB]}
STEP=${2:-all}
LIMIT=${3:-600}
mkdir -p "$OUT/runs"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 -c "import torchao" 2>/dev/null || echo "torchao is not importable: HF int8/int4 runs will refuse (stage it)"
GRID=(model=tinyllama-1.1b device=cuda "grid.batch_sizes=[${BATCHES:-1,8,32}]" "grid.prompt_lens=[${PROMPTS:-128,1024}]"
      grid.new_tokens=32 measure.min_seconds=0.3 measure.overhead_steps=8 ${EXTRA:-})
declare -A OPTIONS=(
  [hf]="backend=hf-flashattn-staticcache backend.attention=sdpa backend.compile=reduce-overhead"
  [ort]="backend=onnxruntime backend.attention=gqa backend.fused_ops=true backend.cuda_graph=true"
)
for backend in hf ort; do
  [ "$STEP" = "$backend" ] || [ "$STEP" = all ] || continue
  for q in ${QUANTS:-none int4 int8}; do
    echo "== $backend quant=$q (limit ${LIMIT}s) $(date -u +%T)"
    # shellcheck disable=SC2086  # OPTIONS holds several key=value words on purpose
    timeout "$LIMIT" python3 -m harness "${GRID[@]}" ${OPTIONS[$backend]} quant="$q" \
      output_dir="$OUT/runs/${backend}_$q" 2>&1 | tee "$OUT/runs/${backend}_$q.log" \
      | grep -v "^W1\|Warning\|warn(\|INFO" | tail -25
    echo "   exit ${PIPESTATUS[0]} $(date -u +%T)"
  done
done 2>&1 | tee "$OUT/quant_$STEP.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$OUT/quant_$STEP.log" 2>&1
tar -C "$OUT" -czf "$OUT/quant_$STEP.tgz" runs && rm -rf "$OUT/runs"
