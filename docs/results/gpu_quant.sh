#!/usr/bin/env bash
# Weight-only quantization on the GPU machine: TinyLlama-1.1B (random weights), bfloat16 activations, the two
# backends that execute there (HF with reduce-overhead, ONNX Runtime's fused GQA graph with CUDA graphs), each at
# quant=none,int8,int4. Results: docs/results/<gpu>/quant/ (README there says which machine and versions).
#
# Usage, from the project root on the GPU machine after staging (docs: /work/shared/docs/gpu.md), with the torchao
# wheel in .whl/ (pip download --no-deps --only-binary=:all: --python-version 3.12 torchao==0.18.0 -d .whl):
#   [QUANTS=none,int8,int4] [EXTRA="key=value ..."] bash docs/results/gpu_quant.sh OUT_DIR [hf|ort|all] [SECONDS_PER_STEP]
# Every job's directory is packed into OUT_DIR/quant.tgz (the device tool brings back few files).
set -u
OUT=${1:?usage: gpu_quant.sh OUT_DIR [hf|ort|all] [SECONDS_PER_STEP]}
STEP=${2:-all}
LIMIT=${3:-1200}
mkdir -p "$OUT"
python3 -c "import torchao" 2>/dev/null \
  || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/torchao-site .whl/torchao-*.whl
export PYTHONPATH="$PWD:/tmp/torchao-site:${PYTHONPATH:-}"
# Trimmed grid (device time is scarce): batch 1 and 8 at prompt 128, 32 new tokens; SDPA attention (no kernel probe).
GRID=(model=tinyllama-1.1b device=cuda "grid.batch_sizes=[1,8]" "grid.prompt_lens=[128]" grid.new_tokens=32
      measure.min_seconds=0.3 measure.overhead_steps=8 ${EXTRA:-})
QUANTS=${QUANTS:-none,int8,int4}
if [ "$STEP" = hf ] || [ "$STEP" = all ]; then
  timeout "$LIMIT" python3 -m harness -m "${GRID[@]}" backend=hf-flashattn-staticcache backend.attention=sdpa \
    backend.compile=reduce-overhead quant="$QUANTS" hydra.sweep.dir="$OUT/runs/hf" 2>&1 | grep -v "^W1\|Warning" \
    | tail -60 > "$OUT/hf.log"
fi
if [ "$STEP" = ort ] || [ "$STEP" = all ]; then
  timeout "$LIMIT" python3 -m harness -m "${GRID[@]}" backend=onnxruntime backend.attention=gqa \
    backend.fused_ops=true backend.cuda_graph=true quant="$QUANTS" hydra.sweep.dir="$OUT/runs/ort" 2>&1 \
    | grep -v "^W1\|Warning\|INFO" | tail -60 > "$OUT/ort.log"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
tar -C "$OUT" -czf "$OUT/quant.tgz" runs && rm -rf "$OUT/runs"
