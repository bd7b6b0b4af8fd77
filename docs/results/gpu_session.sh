#!/usr/bin/env bash
# Reproduces the committed GPU results. Run on the GPU machine from the repository root after staging the wheels it
# lacks (bash ../shared/gpu/stage.sh; see docs/results/README.md). Usage: bash docs/results/gpu_session.sh STEP
# Each step writes a log and a tarball of its run directories under $OUT.
set -uo pipefail
export PYTHONPATH=/root/gpu-site:/root/gpu-site/nvidia_cutlass_dsl/dsl_packages:$PWD ENGINEBENCH_CACHE_DIR=/root/ebcache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/enginebench-gpu}; mkdir -p "$OUT"
GRID="model=tinyllama-1.1b device=cuda grid.batch_sizes=[1,8,32] grid.prompt_lens=[128,1024] grid.new_tokens=64"
step=${1:?step: smoke | gpu-tests | hf | hf-ro | plain | ort | gqa | fused | ort-maxseq | presets | dry | multigpu | interference | flash-tests | flash-validate | flash-ro | flash-profile | quant-profile | quant-ro-profile}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import torch, transformers, onnxruntime as o; print("torch", torch.__version__, "transformers", transformers.__version__, "onnxruntime", o.__version__, o.get_available_providers())'
  case "$step" in
    smoke) python3 -m pytest -q -m gpu tests/test_gpu.py tests/test_dry.py -x ;;
    hf)  python3 -m harness -m $GRID backend=hf-flashattn-staticcache backend.compile=none,reduce-overhead \
           hydra.sweep.dir=$OUT/runs/hf ;;
    plain) # the instrument's independent cross-check (docs/results/crosscheck/)
         python3 docs/results/crosscheck/plain_hf_decode_crosscheck.py --compile reduce-overhead --max-cache 1088
         python3 docs/results/crosscheck/plain_hf_decode_crosscheck.py --compile reduce-overhead ;;
    ort) python3 -m harness $GRID backend=onnxruntime output_dir=$OUT/runs/ort
         python3 -m pytest -q -m gpu tests/test_gpu.py tests/test_dry.py ;;
    gpu-tests) python3 -m pytest -q -m gpu tests/test_gpu.py -p no:logging ;;
    gqa) # ORT's GroupQueryAttention graph, without and with CUDA-graph replay
         python3 -m harness -m $GRID backend=onnxruntime backend.attention=gqa backend.cuda_graph=false,true \
           hydra.sweep.dir=$OUT/runs/ort_gqa ;;
    fused) # the gqa graph with ORT's other fused ops (fused.py), without and with CUDA-graph replay
         python3 -m harness -m $GRID backend=onnxruntime backend.attention=gqa backend.fused_ops=true \
           backend.cuda_graph=false,true hydra.sweep.dir=$OUT/runs/ort_fused ;;
    hf-ro) # HF reduce-overhead on the same machine, right after the gqa step
         python3 -m harness $GRID backend=hf-flashattn-staticcache backend.compile=reduce-overhead \
           output_dir=$OUT/runs/hf_ro ;;
    ort-maxseq)  # in-place cache proof: decode at a fixed fill (p=128 cells) must not slow down when the
         # preallocated length grows from 1088 (the ort step's export) to 2048 (this one's)
         python3 -m harness model=tinyllama-1.1b device=cuda backend=onnxruntime grid.batch_sizes=[1,8,32] \
           grid.prompt_lens=[128,1984] grid.new_tokens=64 validation.enabled=false isolation=process \
           output_dir=$OUT/runs/ort_maxseq ;;
    presets)  # task=validate of the architecture presets on the GPU (bf16), HF and ONNX Runtime
         for m in ${PRESETS:-llama-3.2-1b qwen2.5-0.5b}; do for b in ${BACKENDS:-hf-flashattn-staticcache onnxruntime}; do
           python3 -m harness task=validate device=cuda model=$m backend=$b ${EXTRA:-} output_dir=$OUT/runs/validate_${m}_$b
         done; done ;;
    flash-tests)  # FlashAttention over the static cache vs SDPA-math, CUDA-graph replays, graph breaks, auto
         python3 -m pytest -q -s -m gpu tests/test_gpu.py -k "flash or auto or extra1 or extra3 or extra5" -p no:logging ;;
    flash-validate)  # task=validate with each FlashAttention choice, all at once (CPU fp32 references in parallel)
         for m in tinyllama-1.1b llama-3.2-1b qwen2.5-0.5b; do for a in ${FA_CHOICES:-torch_flash flash_attention_4}; do
           python3 -m harness task=validate device=cuda model=$m backend=hf-flashattn-staticcache \
             backend.attention=$a output_dir=$OUT/runs/validate_${m}_$a > $OUT/runs_${m}_$a.log 2>&1 &
         done; done; wait; tail -n 4 $OUT/runs_*.log; rm -f $OUT/runs_*.log ;;
    flash-ro)  # reduce-overhead (one CUDA-graph replay per decode step) per attention choice, batch 1, through
         # the harness (one run per choice; the targets' cells: tinyllama prompt 128, llama prompt 8192 vs 128)
         for a in sdpa torch_flash flash_attention_4; do
           timeout ${FA_LIMIT:-200} python3 -m harness model=tinyllama-1.1b device=cuda grid.batch_sizes=[1] \
             grid.prompt_lens=[128,1984] grid.new_tokens=64 backend=hf-flashattn-staticcache backend.attention=$a \
             backend.compile=reduce-overhead output_dir=$OUT/runs/fa_tinyllama_ro_$a
           timeout ${FA_LIMIT:-200} python3 -m harness model=llama-3.2-1b device=cuda grid.batch_sizes=[1] \
             grid.prompt_lens=[128,8192] grid.new_tokens=64 backend=hf-flashattn-staticcache backend.attention=$a \
             backend.compile=reduce-overhead output_dir=$OUT/runs/fa_llama_ro_$a
         done ;;
    quant-profile)  # where a quantized decode step's time goes, per kernel, batch 1: ORT's fused GQA graph (no CUDA
         # graph) and HF compiled without CUDA graphs (compile=default: the fused kernels reduce-overhead replays)
         P="python3 -m tools.profile_decode --model tinyllama-1.1b --quant none int4 int8 --batch 1 --prompt 128"
         timeout ${Q_LIMIT:-150} $P --backend onnxruntime --attention gqa --set fused_ops=true \
           --out $OUT/profile_quant_ort_b1.csv
         timeout ${Q_LIMIT:-150} $P --attention sdpa --set compile=default --out $OUT/profile_quant_hf_b1.csv ;;
    quant-ro-profile)  # host gap of torchao's int8 step: kernels of the compiled step without CUDA graphs, then wall
         # vs kernel time with reduce-overhead (the profiler records the kernels a CUDA-graph replay launches)
         P="python3 -m tools.profile_decode --model tinyllama-1.1b --attention sdpa --batch 1 --prompt 128"
         timeout ${Q_LIMIT:-200} $P --set compile=default --quant int8 --out $OUT/profile_quant_hf_int8_compiled_b1.csv
         timeout ${Q_LIMIT:-200} $P --set compile=reduce-overhead --quant none int8 --out $OUT/profile_quant_hf_ro_b1.csv ;;
    flash-profile)  # where a decode step's time goes at a short and a long fill, per kernel (uncompiled: each
         # kernel as the host launches it), for the two FlashAttention choices that run on Hopper
         python3 -m tools.profile_decode --model llama-3.2-1b --attention torch_flash flash_attention_4 sdpa \
           --batch 1 --prompt 128 8192 --out $OUT/profile_llama_b1.csv ;;
    dry) python3 -m tools.dry --device cuda --out $OUT/dry_gpu.csv --iters 200 ;;
    multigpu) bash docs/results/multigpu.sh sweep ;;  # nvidia-h200-x2; stage hydra-joblib-launcher + joblib too
    interference) bash docs/results/multigpu.sh interference ;;  # nvidia-h200-x2
  esac
} 2>&1 | tee "$OUT/$step.log"
[ -d "$OUT/runs" ] && tar -C "$OUT" -czf "$OUT/${step}_runs.tar.gz" runs && rm -rf "$OUT/runs"
exit 0
