#!/usr/bin/env bash
# Benchmark: `onnx-prune check` against the obvious onnxruntime loop (bench/check/ort_check.py)
# on a real PyTorch CNN export ([N, 3, 48, 192], dynamic batch) and 1,000 samples.
# Usage: bench/check/run.sh [SAMPLES]   (needs: pip install torch onnx onnxruntime numpy; GNU time)
# The model and inputs are generated into bench/out/check (not committed: 110 MB of inputs).
set -euo pipefail
cd "$(dirname "$0")/../.."
samples=${1:-1000}
out=bench/out/check
mkdir -p "$out"
[ -f "$out/cnn.onnx" ] || python3 bench/check/export_cnn.py "$out/cnn.onnx" "$out/inputs.npz" "$samples"
cargo build --release --locked --quiet
bin=target/release/onnx-prune
[ -f "$out/pruned.onnx" ] || "$bin" prune "$out/cnn.onnx" -o "$out/pruned.onnx" --sparsity 0.5 > /dev/null
measure() { # name, command... : median of 3 runs
  local name=$1; shift
  local runs=()
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M" -o "$out/time.txt" "$@" > /dev/null 2>&1
    runs+=("$(cat "$out/time.txt")")
  done
  local seconds kib
  seconds=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f1 | sort -n | sed -n 2p)
  kib=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f2 | sort -n | tail -1)
  printf '| %s | %s | %s |\n' "$name" "$seconds" "$((kib / 1024))"
}
check=("$bin" check "$out/cnn.onnx" "$out/pruned.onnx" --inputs "$out/inputs.npz" --min-cosine 0)
{
  echo "$samples samples of [3, 48, 192], reference and candidate; $(nproc) cores"
  echo
  echo "| what | seconds (median of 3) | peak RSS MiB |"
  echo "|---|---|---|"
  measure "onnxruntime, one sample per run (bench/check/ort_check.py)" python3 bench/check/ort_check.py "$out/cnn.onnx" "$out/pruned.onnx" "$out/inputs.npz"
  measure "onnx-prune check (batch size picked)" "${check[@]}"
  for batch in 1 8 32; do
    measure "onnx-prune check --batch-size $batch" "${check[@]}" --batch-size "$batch"
  done
} | tee "$out/results.md"
