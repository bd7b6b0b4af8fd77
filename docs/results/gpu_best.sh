#!/usr/bin/env bash
# The backends at their best, on one H200 in one sitting (about 8 minutes; docs/tuning.md says what each step shows):
#   compile  harness HF backend.compile=max-autotune vs the plain script (docs/results/crosscheck/, --compile max-autotune),
#            TinyLlama-1.1B then Llama-3.2-1B, batch 1 x prompt 128, the same static cache length, the same
#            Inductor cache (so both time the same tuned kernels: what differs is the instrument);
#   auto     backend.attention=auto at fills 128 and 8192 (Llama-3.2-1B, batch 1): every candidate's measured
#            step and the choice per fill are in run.json's backend_info.attention_auto;
#   int4-hf  TinyLlama-1.1B bf16 vs int4 through each torchao kernel (tinygemm, gemlite, mslk, mslk_preshuffled:
#            a kernel whose package is not staged is refused in one line and the others go on), batch 1 and 8,
#            each step captured as a CUDA graph by hand (backend.cuda_graph=true: no compile time, and "two speeds
#            in one cell" under CUDA graphs shows in the report's uneven-cell list);
#   int4-ort the same on ONNX Runtime's fused GQA graph with CUDA graphs: bf16, int4 MatMulNBits with ORT's own
#            kernels, int4 with the CUTLASS fpA_intB kernels (backend.nbits_kernel=fpa_intb).
#   captured harness HF compile=max-autotune with the compiled step captured by hand (backend.cuda_graph=true)
#            beside the same with torch's cudagraph trees, and the plain script both ways (--capture), per model
#            in MODELS (default TinyLlama-1.1B), batch 1 x prompt 128, one Inductor cache (GRAPHS="true" and
#            CAPTURES="--capture" narrow it to the captured pair);
#   int4-captured  TinyLlama-1.1B compile=max-autotune + cuda_graph=true: bf16 against int4 through tinygemm and
#            gemlite, batch 1 and 8;
#   int4-fp16  the same in float16 (model.dtype=float16): float16 against int4 through gemlite (torchao 0.18 builds
#            gemlite's layer in float16 only) and tinygemm, batch 1 and 8;
#   ort-llama ONNX Runtime (gqa, fused ops, CUDA graphs) on Llama-3.2-1B, batch 1 x prompt 128;
#   attention  each attention choice (auto, sdpa, torch_flash, flash_attention_4) with compile=max-autotune and the
#            compiled step captured by hand (cuda_graph=true), per model in MODELS (default Llama-3.2-1B), batch 1 x
#            prompt 128 and 8192: what each kernel costs at a short and a long fill in the backend's best
#            configuration, and whether auto's choice per cell is the fastest candidate there;
#   sweep    the default grid (batch 1, 4 x prompt 32, 128) over HF and ONNX Runtime at their defaults (the
#            TensorRT backends cannot run on this GPU) on TinyLlama-1.1B with default measurement settings and
#            validation, as one multirun from a cold cache: the wall time to a first comparison (sweep_wall.txt).
#
# Usage, from the project root on the GPU machine after staging the wheels (torchao, and gemlite if wanted):
#   GPU_STAGE_CACHE=... bash ../shared/gpu/stage.sh torchao==0.18.0 gemlite==0.5.1.post1
#   bash docs/results/gpu_best.sh OUT_DIR [all | "STEP ..."]   (MODELS=llama-3.2-1b: the compile step for one model)
# Not yet timed on the GPU: compile is the long step (max-autotune compiles cold the first time, twice per model);
# if one device call cannot hold everything, run "compile" in one and "auto int4-hf int4-ort" in the next (a warm
# machine keeps OUT_DIR/cache, so nothing is exported or compiled twice).
# Each harness run has its own time limit; runs land in OUT_DIR/runs/<step>_<name>/ (results.csv, run.json,
# samples), the console of each beside it; everything is packed into OUT_DIR/best_<step>.tgz at the end.
set -u
OUT=${1:?usage: gpu_best.sh OUT_DIR [all | "compile auto int4-hf int4-ort"]}
STEP=${2:-all}
mkdir -p "$OUT/runs"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
CACHE="$OUT/cache"  # the artifact cache: ONNX exports, Inductor's compile and autotune caches (a rerun starts warm)
FAST=(device=cuda measure.warmup=2 measure.min_iters=5 measure.min_seconds=0.3
      measure.overhead_steps=8 validation.enabled=false "cache_dir=$CACHE")
HF=(backend=hf-flashattn-staticcache)
ORT=(backend=onnxruntime backend.attention=gqa backend.fused_ops=true backend.cuda_graph=true)

run() {  # run NAME LIMIT_S args...: one harness run under its own limit
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s) $(date -u +%T)"
  timeout "$limit" python3 -m harness "$@" output_dir="$OUT/runs/$name" > "$OUT/runs/$name.log" 2>&1
  echo "   exit $? $(date -u +%T)"
  grep -v "^W1\|Warning\|warn(\|INFO" "$OUT/runs/$name.log" | tail -8
}

step() { [ "$STEP" = all ] || [[ " $STEP " == *" $1 "* ]]; }

{
if step compile; then
  for model in ${MODELS:-tinyllama-1.1b llama-3.2-1b}; do
    # SDPA as in the script (HF's own attention over the static cache): like against like
    run "compile_$model" 240 "${FAST[@]}" "${HF[@]}" model=$model backend.compile=max-autotune backend.attention=sdpa \
      "grid.batch_sizes=[1]" "grid.prompt_lens=[128]" grid.new_tokens=32
    slots=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['backend_info']['static_cache_len'])" \
      "$OUT/runs/compile_$model/run.json" 2>/dev/null || echo 192)
    echo "== cross-check $model (cache $slots slots) $(date -u +%T)"
    TORCHINDUCTOR_CACHE_DIR="$CACHE/inductor" timeout 180 python3 docs/results/crosscheck/plain_hf_decode_crosscheck.py \
      --preset conf/model/$model.yaml --compile max-autotune --prompt 128 --steps 32 --repeats 5 \
      --max-cache "$slots" --out "$OUT/runs/crosscheck_$model.csv" 2>&1 | grep -v "^W1\|Warning\|warn(" | tail -2
  done
fi
if step auto; then
  run auto_llama-3.2-1b 150 "${FAST[@]}" "${HF[@]}" model=llama-3.2-1b backend.attention=auto \
    "grid.batch_sizes=[1]" "grid.prompt_lens=[128,8192]" grid.new_tokens=16
  python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['backend_info'].get('attention_auto'), indent=1))" \
    "$OUT/runs/auto_llama-3.2-1b/run.json" 2>&1 | tee "$OUT/runs/auto_choice.txt"
fi
if step int4-hf; then
  run int4-hf_bf16 120 "${FAST[@]}" "${HF[@]}" model=tinyllama-1.1b backend.cuda_graph=true backend.attention=torch_flash \
    "grid.batch_sizes=[1,8]" "grid.prompt_lens=[128]" grid.new_tokens=32
  for kernel in tinygemm gemlite mslk mslk_preshuffled; do
    run "int4-hf_$kernel" 120 "${FAST[@]}" "${HF[@]}" model=tinyllama-1.1b backend.cuda_graph=true backend.attention=torch_flash \
      quant=int4 backend.int4_kernel=$kernel "grid.batch_sizes=[1,8]" "grid.prompt_lens=[128]" grid.new_tokens=32
  done
fi
if step int4-ort; then
  run int4-ort_bf16 200 "${FAST[@]}" "${ORT[@]}" model=tinyllama-1.1b "grid.batch_sizes=[1,8]" "grid.prompt_lens=[128]" grid.new_tokens=32
  for kernel in default fpa_intb; do
    run "int4-ort_$kernel" 120 "${FAST[@]}" "${ORT[@]}" model=tinyllama-1.1b quant=int4 backend.nbits_kernel=$kernel \
      "grid.batch_sizes=[1,8]" "grid.prompt_lens=[128]" grid.new_tokens=32
  done
fi
if step captured; then
  for model in ${MODELS:-tinyllama-1.1b}; do
    for graph in ${GRAPHS:-true false}; do
      run "captured_${model}_cuda_graph_$graph" 300 "${FAST[@]}" "${HF[@]}" model=$model backend.compile=max-autotune \
        backend.cuda_graph=$graph backend.attention=sdpa "grid.batch_sizes=[1]" "grid.prompt_lens=[128]" grid.new_tokens=32
    done
    for capture in ${CAPTURES:---capture plain}; do
      [ "$capture" = plain ] && capture=""
      echo "== cross-check $model $capture $(date -u +%T)"
      TORCHINDUCTOR_CACHE_DIR="$CACHE/inductor" timeout 240 python3 docs/results/crosscheck/plain_hf_decode_crosscheck.py \
        --preset conf/model/$model.yaml --compile max-autotune $capture --prompt 128 --steps 32 --repeats 5 \
        --max-cache 160 --out "$OUT/runs/crosscheck_${model}${capture:+_capture}.csv" 2>&1 | grep -v "^W1\|Warning\|warn(" | tail -2
    done
  done
fi
if step int4-captured; then
  run int4-captured_bf16 300 "${FAST[@]}" "${HF[@]}" model=tinyllama-1.1b backend.compile=max-autotune backend.cuda_graph=true \
    backend.attention=sdpa "grid.batch_sizes=[1,8]" "grid.prompt_lens=[128]" grid.new_tokens=32
  for kernel in tinygemm gemlite; do
    run "int4-captured_$kernel" 300 "${FAST[@]}" "${HF[@]}" model=tinyllama-1.1b backend.compile=max-autotune \
      backend.cuda_graph=true backend.attention=sdpa quant=int4 backend.int4_kernel=$kernel \
      "grid.batch_sizes=[1,8]" "grid.prompt_lens=[128]" grid.new_tokens=32
  done
fi
if step int4-fp16; then
  for quant in none gemlite tinygemm; do
    args=(); [ $quant = none ] || args=(quant=int4 backend.int4_kernel=$quant)
    run "int4-fp16_$quant" 200 "${FAST[@]}" "${HF[@]}" model=tinyllama-1.1b model.dtype=float16 \
      backend.compile=max-autotune backend.cuda_graph=true backend.attention=sdpa "${args[@]}" \
      "grid.batch_sizes=[1,8]" "grid.prompt_lens=[128]" grid.new_tokens=32
  done
fi
if step ort-llama; then
  run ort_llama-3.2-1b 240 "${FAST[@]}" "${ORT[@]}" model=llama-3.2-1b "grid.batch_sizes=[1]" "grid.prompt_lens=[128]" \
    grid.new_tokens=32
fi
if step attention; then
  for model in ${MODELS:-llama-3.2-1b}; do
    for attention in ${ATTENTIONS:-auto sdpa torch_flash flash_attention_4}; do
      run "attention_${model}_$attention" ${ATTN_LIMIT:-170} "${FAST[@]}" "${HF[@]}" model=$model \
        backend.compile=max-autotune backend.cuda_graph=true backend.attention=$attention \
        "grid.batch_sizes=[1]" "grid.prompt_lens=[128,${LONG_PROMPT:-8192}]" grid.new_tokens=32
    done
  done
fi
if step sweep; then
  start=$(date +%s)
  timeout 540 python3 -m harness -m "backend=hf-flashattn-staticcache,onnxruntime" model=tinyllama-1.1b device=cuda \
    "cache_dir=$OUT/sweep_cache" output_dir="$OUT/runs/sweep" > "$OUT/runs/sweep.log" 2>&1
  echo "default sweep: exit $? in $(( $(date +%s) - start )) s" | tee "$OUT/runs/sweep_wall.txt"
  tail -25 "$OUT/runs/sweep.log"
fi
} 2>&1 | tee "$OUT/best_${STEP// /_}.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$OUT/best_${STEP// /_}.log" 2>&1
tag=${STEP// /_}
tar -C "$OUT" -czf "$OUT/best_$tag.tgz" runs && rm -rf "$OUT/runs"
