#!/usr/bin/env bash
# bf16 validation of the model-family presets on one GPU (docs/models.md): each preset against the float32 HF model
# on the same inputs (task=validate), through the HF backend and, for the families the ONNX export rebuilds, through
# ONNX Runtime. Random weights (the presets' dimensions, seed 0). Every step has its own time limit, so a slow step
# cannot take the others' results with it.
# Run from the repository root on the GPU machine after staging (bash ../shared/gpu/stage.sh torchao==0.18.0):
#   bash docs/results/gpu_families.sh OUT_DIR ["hf" | "ort" | "ort-large" | "hf ort"]
# (ort-large: ONNX Runtime for phi-3-mini and mistral-7b, whose exports write several GB of external data)
# The validations run side by side (nothing here is timed, and the GPU holds all four models at once).
set -u
OUT=${1:?usage: gpu_families.sh OUT_DIR [steps]}
STEPS=${2:-hf ort}
mkdir -p "$OUT/families"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
validate() {  # validate BACKEND MODEL LIMIT_S [args...]
  local backend=$1 model=$2 limit=$3; shift 3
  local name=${backend%%-*}_$model
  echo "== $name (limit ${limit}s) $(date -u +%T)"
  timeout "$limit" python3 -m harness task=validate device=cuda model="$model" backend="$backend" "$@" \
    output_dir="$OUT/families/$name" > "$OUT/families/$name.log" 2>&1
  echo "   exit $? $(date -u +%T)"
  tail -4 "$OUT/families/$name.log"
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  if [[ " $STEPS " == *" hf "* ]]; then
    validate hf-flashattn-staticcache phi-3-mini 280 &
    validate hf-flashattn-staticcache mistral-7b 280 &
  fi
  if [[ " $STEPS " == *" ort "* ]]; then
    validate onnxruntime qwen3-0.6b 280 &
    validate onnxruntime gemma-3-1b 280 &
  fi
  if [[ " $STEPS " == *" ort-large "* ]]; then
    validate onnxruntime phi-3-mini ${LARGE_LIMIT:-500} &
    validate onnxruntime mistral-7b ${LARGE_LIMIT:-500} &
  fi
  wait
} 2>&1 | tee -a "$OUT/families/families.log"
