#!/usr/bin/env bash
# Calibrated pruning: onnx-prune vs onnxsim 0.8.1 (apply_wanda_pruning, apply_sparsegpt_pruning)
# on the same generated model (bench/calibrated.py generate: 3 Convs and 2 Gemms, 0.28M
# parameters) and the same 128 calibration samples. For each: seconds, CPU seconds (user +
# system: what a shared machine's load does not inflate), peak RSS, and
# the mean over pruned weights of ||XW^T - XW'^T||^2 / ||XW^T||^2 on the calibration data,
# computed by bench/calibrated.py from onnxruntime activations (the same formula for both), and
# the sparsity of the pruned weights.
# Usage: bench/calibrated.sh [SPARSITY]
#   needs: pip install onnx numpy onnxruntime onnxsim==0.8.1; GNU time
set -euo pipefail
cd "$(dirname "$0")/.."
sparsity=${1:-0.5}
out=bench/out/calibrated
mkdir -p "$out"
[ -f "$out/model.onnx" ] || python3 bench/calibrated.py generate "$out/model.onnx" "$out/calib.npz"
# ONNX_PRUNE=path/to/onnx-prune skips the release build (e.g. a debug binary, for figures only).
bin=${ONNX_PRUNE:-target/release/onnx-prune}
[ -n "${ONNX_PRUNE:-}" ] || cargo build --release --locked --quiet
measure() { # name, output model, command...
  local name=$1 pruned=$2; shift 2
  /usr/bin/time -f "%e %U %S %M" -o "$out/time.txt" "$@" > /dev/null
  read -r seconds user sys kib < "$out/time.txt"
  local cpu
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  local error
  error=$(python3 bench/calibrated.py error "$out/model.onnx" "$pruned" "$out/calib.npz")
  printf '| %s | %s | %s | %s | %s |\n' "$name" "$seconds" "$cpu" "$((kib / 1024))" "$error"
}
{
  echo "model: $(du -k "$out/model.onnx" | cut -f1) KiB; 128 calibration samples; sparsity $sparsity; $(nproc) cores"
  echo
  echo "| what | seconds | CPU seconds | peak RSS MiB | mean output error | sparsity |"
  echo "|---|---|---|---|---|---|"
  for method in wanda sparsegpt; do
    measure "onnx-prune --method $method" "$out/ours-$method.onnx" \
      "$bin" prune "$out/model.onnx" -o "$out/ours-$method.onnx" --sparsity "$sparsity" \
      --method "$method" --calibration "$out/calib.npz" --include 'weight$'
    measure "onnxsim 0.8.1 apply_${method}_pruning" "$out/onnxsim-$method.onnx" \
      python3 bench/calibrated.py onnxsim "$method" "$out/model.onnx" "$out/calib.npz" \
      "$out/onnxsim-$method.onnx" "$sparsity"
  done
} | tee "$out/results.md"
