#!/usr/bin/env bash
# Two GPUs of one host (nvidia-h200-x2), called by gpu_session.sh steps `multigpu` and `interference`; writes under
# $OUT/runs. Usage: bash docs/results/multigpu.sh sweep | interference
#   sweep:        the ONNX export once (cached), then the same two-job sweep (HF static cache, ONNX Runtime) with
#                 both GPUs (the jobs run at once, one per GPU) and with one GPU visible (the second job queues);
#                 NVML sampled meanwhile; nvml_watch.py check states which process used which GPU; wall clocks.
#   interference: one HF cell on GPU 0 alone, while GPU 1 runs a heavy job, and alone again (drift control);
#                 enginebench-report compare gives the difference with its verdict (test on the samples).
# MG_DRY=1 runs the same logic on a CPU machine (tiny-llama; pin.cpu_slots stand in for the GPUs).
set -uo pipefail
PY=${PY:-python3}
R=$OUT/runs; mkdir -p "$R"
part=${1:?sweep | interference}
if [ "${MG_DRY:-0}" = 1 ]; then
  MODEL="model=tiny-llama grid.batch_sizes=[1,2] grid.prompt_lens=[16] grid.new_tokens=8 measure.min_seconds=0"
  TWO="pin.cpu_slots=2"; ONE="pin.cpu_slots=1"; GPU0=cpu; GPU1=cpu; HEAVY_GRID="grid.batch_sizes=[4] grid.prompt_lens=[64]"
else
  MODEL="model=tinyllama-1.1b grid.batch_sizes=[1,8] grid.prompt_lens=[128] grid.new_tokens=64"
  TWO=""; ONE=""; GPU0=cuda:0; GPU1=cuda:1; HEAVY_GRID="grid.batch_sizes=[32] grid.prompt_lens=[1984] grid.new_tokens=4"
fi
# The heavy job is prefill-bound (32 x 1984 tokens per call) so that it keeps GPU 1 busy: an eager decode loop is
# bound by kernel launches and leaves the GPU mostly idle, which measures nothing.
SWEEP="-m hydra/launcher=enginebench_joblib hydra.launcher.n_jobs=2 device=pin backend=hf-flashattn-staticcache,onnxruntime"

watch() { $PY docs/results/nvml_watch.py sample "$1" & WATCH=$!; }
unwatch() { kill -TERM "$WATCH" 2>/dev/null; wait "$WATCH"; }
now() { date +%s.%N; }

case "$part" in
  sweep)
    $PY -c 'import hydra_plugins.hydra_joblib_launcher, joblib' || {
      echo "hydra-joblib-launcher is missing: stage it with bash ../shared/gpu/stage.sh hydra-joblib-launcher==1.2.0 joblib==1.6.0"; exit 1; }
    $PY -m harness task=build backend=onnxruntime device=$GPU0 $MODEL output_dir=$R/build
    for n in 2 1; do
      if [ $n = 2 ]; then VIS=""; EXTRA=$TWO; else VIS="CUDA_VISIBLE_DEVICES=0"; EXTRA=$ONE; fi
      watch $R/nvml_${n}gpu.csv
      t0=$(now)
      env $VIS $PY -m harness $SWEEP $MODEL $EXTRA hydra.sweep.dir=$R/sweep_${n}gpu
      echo "sweep on $n GPU(s): exit $?, wall clock $($PY -c "print(round($(now) - $t0, 1))") s"
      unwatch
      $PY docs/results/nvml_watch.py check $R/sweep_${n}gpu $R/nvml_${n}gpu.csv --expect-gpus $n \
        | tee $R/check_${n}gpu.md
    done ;;
  interference)
    # 15 iterations per cell: enough samples for compare's test (harness/measure/stats.py needs >= 5 a side)
    CELL="$MODEL device=$GPU0 backend=hf-flashattn-staticcache validation.enabled=false measure.min_iters=15"
    $PY -m harness $CELL output_dir=$R/cell_alone
    $PY -m harness $MODEL $HEAVY_GRID device=$GPU1 backend=hf-flashattn-staticcache validation.enabled=false \
      measure.min_seconds=900 measure.max_seconds=1000 measure.max_iters=1000000 output_dir=$R/heavy_gpu1 \
      > $R/heavy_gpu1.log 2>&1 &
    HEAVY=$!
    busy=0
    for _ in $(seq 150); do  # until the heavy job keeps GPU 1 busy for 3 s in a row, at most 2.5 minutes
      if [ "${MG_DRY:-0}" = 1 ]; then sleep 5; break; fi
      util=$(nvidia-smi --id=1 --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null | tr -d ' ')
      if [ "${util:-0}" -ge 50 ]; then busy=$((busy + 1)); else busy=0; fi
      [ $busy -ge 3 ] && break
      sleep 1
    done
    if ! kill -0 $HEAVY 2>/dev/null; then  # a loaded run without the load would be reported as "no interference"
      echo "the heavy job on $GPU1 is not running (see heavy_gpu1.log): interference not measured"; tail -3 $R/heavy_gpu1.log
      exit 1
    fi
    echo "heavy job on $GPU1 running (GPU 1 utilisation ${util:-n/a} %)"
    watch $R/nvml_interference.csv
    $PY -m harness $CELL output_dir=$R/cell_loaded
    unwatch
    kill -0 $HEAVY 2>/dev/null || { echo "the heavy job ended before the loaded cell did: interference not measured"; exit 1; }
    kill -TERM $HEAVY; wait $HEAVY  # (a background job ignores SIGINT)
    $PY -m harness $CELL output_dir=$R/cell_alone_after
    for pair in "cell_alone cell_loaded" "cell_alone cell_alone_after"; do
      set -- $pair
      echo "== $1 -> $2 (median change, its bootstrap CI and the Mann-Whitney verdict on the kept samples)"
      $PY -m harness.report.cli compare $R/$1 $R/$2 --out $R/compare_${1}_vs_$2.csv
    done
    echo "== p10 / p50 / p90 per run (from summary.csv), for runs without kept samples too"
    $PY - "$R" <<'PYEOF'
import sys, pandas as pd
rows = []
for run in ("cell_alone", "cell_loaded", "cell_alone_after"):
    s = pd.read_csv(f"{sys.argv[1]}/{run}/summary.csv")
    for m in ("decode_latency_ms", "e2e_latency_ms"):
        for r in s.itertuples():
            rows.append({"run": run, "batch": r.batch_size, "metric": m, "p10": getattr(r, f"{m}_p10"),
                         "p50": getattr(r, f"{m}_p50"), "p90": getattr(r, f"{m}_p90")})
t = pd.DataFrame(rows).sort_values(["metric", "batch", "run"])
print(t.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
t.to_csv(f"{sys.argv[1]}/interference_p10_p50_p90.csv", index=False)
PYEOF
    ;;
esac
