#!/usr/bin/env bash
# Top-1 accuracy after pruning without retraining, by method, on the PyTorch sample
# (fixtures/digits-mlp-pytorch: an MLP 64-256-128-10 trained on scikit-learn's digits).
# Calibrates on the first 128 test samples and measures on the other 322.
# Usage: bench/accuracy.sh [MODEL TEST_SET.npz INPUT_KEY]   (needs: pip install numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-fixtures/digits-mlp-pytorch/dense.onnx}
test_set=${2:-fixtures/digits-mlp-pytorch/test_set.npz}
key=${3:-pixels}
out=bench/out/accuracy
mkdir -p "$out"
python3 - "$test_set" "$key" "$out" <<'PY'
import sys, numpy as np
data, key, out = np.load(sys.argv[1]), sys.argv[2], sys.argv[3]
np.savez(f"{out}/calibration.npz", **{key: data[key][:128]})
np.savez(f"{out}/evaluation.npz", **{key: data[key][128:]}, labels=data["labels"][128:])
PY
# ONNX_PRUNE=path/to/onnx-prune skips the release build (e.g. a debug binary, for figures only).
bin=${ONNX_PRUNE:-target/release/onnx-prune}
[ -n "${ONNX_PRUNE:-}" ] || cargo build --release --locked --quiet
accuracy() { # pruned model -> candidate accuracy on the evaluation split
  "$bin" check "$model" "$1" --inputs "$out/evaluation.npz" --labels "$out/evaluation.npz:labels" \
    --max-accuracy-drop 1 --min-cosine=-1 --report "$out/check.json" > /dev/null
  python3 -c "import json; a = json.load(open('$out/check.json'))['accuracy']; print(f\"{a['candidate']:.3f}\", end='')"
}
mean_error() { # report -> mean output error over weights
  python3 -c "import json; w = json.load(open('$1'))['weights']; e = [x['output_error'] for x in w if 'output_error' in x]; print(f'{sum(e) / len(e):.4f}', end='')"
}
dense=$("$bin" check "$model" "$model" --inputs "$out/evaluation.npz" --labels "$out/evaluation.npz:labels" --report "$out/check.json" > /dev/null; python3 -c "import json; print(json.load(open('$out/check.json'))['accuracy']['reference'])")
echo "dense top-1 on the 322 held-out samples: $dense"
echo
echo "| sparsity | method | order | bias corrected | top-1 | mean output error |"
echo "|---|---|---|---|---|---|"
for sparsity in ${SPARSITIES:-0.5 0.7 0.9}; do
  for method in magnitude wanda sparsegpt; do
    orders="dense"; [ "$method" != magnitude ] && orders="dense sequential"
    for order in $orders; do
      for bias in no yes; do
        flags=(--method "$method" --sparsity "$sparsity" --calibration "$out/calibration.npz")
        [ "$method" != magnitude ] && flags+=(--calibration-order "$order")
        [ "$bias" = yes ] && flags+=(--correct-bias)
        "$bin" prune "$model" -o "$out/pruned.onnx" --report "$out/prune.json" "${flags[@]}" > /dev/null
        echo "| $sparsity | $method | $order | $bias | $(accuracy "$out/pruned.onnx") | $(mean_error "$out/prune.json") |"
      done
    done
  done
done
