#!/usr/bin/env bash
# Benchmark: onnx-prune vs an onnx+numpy script vs copying the file, on a generated 1 GiB model.
# Usage: bench/run.sh [LAYERS] [SIZE] [OUTPUT_DIR]   (needs: pip install onnx numpy; GNU time)
# Outputs are written to OUTPUT_DIR (default bench/out; /dev/shm takes the disk out of the
# comparison). Figures go to bench/out/results-<file system of OUTPUT_DIR>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=${1:-16}
size=${2:-4096}
out=bench/out
dest=${3:-$out}
mkdir -p "$out" "$dest"
fstype=$(df --output=fstype "$dest" | tail -1)
model="$out/model-${layers}x${size}.onnx"
[ -f "$model" ] || python3 bench/generate_model.py "$model" "$layers" "$size"
cargo build --release --locked --quiet
bin=target/release/onnx-prune
measure() { # name, command... : median of 3 runs
  local name=$1; shift
  local runs=()
  for _ in 1 2 3; do
    rm -f "$dest"/copy.onnx "$dest"/pruned.onnx "$dest"/numpy.onnx  # no old output to free on the clock
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
  echo "model: $(du -m "$model" | cut -f1) MiB, $layers Gemm layers of ${size}x${size} float32; $(nproc) cores; outputs in $dest ($fstype)"
  echo
  echo "| what | seconds (median of 3) | peak RSS MiB |"
  echo "|---|---|---|"
  measure "cp" cp "$model" "$dest/copy.onnx"
  measure "cp, then fsync (onnx-prune syncs before its rename)" sh -c "cp '$model' '$dest/copy.onnx' && sync '$dest/copy.onnx'"
  measure "onnx-prune prune --scope global --sparsity 0.5" "$bin" prune "$model" -o "$dest/pruned.onnx" --scope global --sparsity 0.5
  measure "onnx + numpy (bench/numpy_prune.py)" python3 bench/numpy_prune.py "$model" "$dest/numpy.onnx" 0.5
} | tee "$out/results-$fstype.md"
rm -f "$dest/copy.onnx"
