#!/usr/bin/env bash
# What weight-only quantization costs in accuracy, per scheme and backend, on the real SmolLM2-135M-Instruct
# checkpoint (model=smollm2-135m: the shipped chat prompts, 32 greedy tokens, and the perplexity of
# harness/data/perplexity.txt), float32 activations on the CPU. task=validate: no timing, so any CPU will do.
#
# Usage, from the project root: bash docs/results/cpu_quant_smollm2.sh [OUT_DIR]
# Each run writes OUT_DIR/<backend>-<quant>/{validation.csv,run.json}; the summary is OUT_DIR/summary.csv.
set -u
OUT=${1:-docs/results/cpu/quant_smollm2}
mkdir -p "$OUT"
run() {  # backend quant [extra...]
  local dir="$OUT/$1-$2"
  python3 -m harness task=validate device=cpu model=smollm2-135m backend="$1" quant="$2" "${@:3}" \
    output_dir="$dir" 2>&1 | grep -iE "^validate|^perplexity|error" | tee "$dir.log"
}
# RUNS="backend:quant ..." picks a subset (default: all). HF on the CPU dequantizes every weight on every call
# (torchao without torch.compile), so its runs are the slow ones; every run also reports what its scheme costs the
# float32 HF model itself (scheme_max_abs_diff, scheme_kl_divergence).
for item in ${RUNS:-onnxruntime:int8 onnxruntime:int4 trt-handbuilt:int8 trt-handbuilt:fp8 hf-flashattn-staticcache:int8 \
                   hf-flashattn-staticcache:int4 hf-flashattn-staticcache:fp8}; do
  run "${item%%:*}" "${item##*:}"
done
python3 - "$OUT" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1])
frames = [pd.read_csv(f).assign(run=f.parent.name) for f in sorted(out.glob("*/validation.csv"))]
table = pd.concat(frames, ignore_index=True)
cols = ["run", "backend", "quant", "case", "max_abs_diff", "mean_abs_diff", "kl_divergence", "top1_agreement",
        "greedy_agreement", "scheme_max_abs_diff", "tolerance", "passed", "accuracy_perplexity",
        "reference_perplexity"]
table[[c for c in cols if c in table]].to_csv(out / "summary.csv", index=False)
print(table[[c for c in cols if c in table]].to_string(index=False))
EOF
