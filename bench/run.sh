#!/usr/bin/env bash
# Benchmark: onnx-prune vs an onnx+numpy script vs copying the file, on a generated 1 GiB model.
# Usage: bench/run.sh [LAYERS] [SIZE]   (needs: pip install onnx numpy; GNU time)
# Figures go to bench/out/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=${1:-16}
size=${2:-4096}
out=bench/out
mkdir -p "$out"
model="$out/model-${layers}x${size}.onnx"
[ -f "$model" ] || python3 bench/generate_model.py "$model" "$layers" "$size"
cargo build --release --locked --quiet
bin=target/release/onnx-prune
measure() { # name, command... : median of 3 runs
  local name=$1; shift
  local runs=()
  for _ in 1 2 3; do
    rm -f "$out"/copy.onnx "$out"/pruned.onnx "$out"/numpy.onnx  # no old output to free on the clock
    sync; sleep 2; cat "$model" > /dev/null  # flushed disk, warm input, for every contender
    /usr/bin/time -f "%e %M" -o "$out/time.txt" "$@" > /dev/null
    runs+=("$(cat "$out/time.txt")")
  done
  local seconds kib
  seconds=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f1 | sort -n | sed -n 2p)
  kib=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f2 | sort -n | tail -1)
  printf '| %s | %s | %s |\n' "$name" "$seconds" "$((kib / 1024))"
}
{
  echo "model: $(du -m "$model" | cut -f1) MiB, $layers Gemm layers of ${size}x${size} float32; $(nproc) cores"
  echo
  echo "| what | seconds (median of 3) | peak RSS MiB |"
  echo "|---|---|---|"
  measure "cp" cp "$model" "$out/copy.onnx"
  measure "cp, then fsync (onnx-prune syncs before its rename)" sh -c "cp '$model' '$out/copy.onnx' && sync '$out/copy.onnx'"
  measure "onnx-prune prune --scope global --sparsity 0.5" "$bin" prune "$model" -o "$out/pruned.onnx" --scope global --sparsity 0.5
  measure "onnx + numpy (bench/numpy_prune.py)" python3 bench/numpy_prune.py "$model" "$out/numpy.onnx" 0.5
} | tee "$out/results.md"
rm -f "$out/copy.onnx"
