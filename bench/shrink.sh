#!/usr/bin/env bash
# Structured pruning: onnx-prune shrink vs onnxsim 0.8.1's apply_structured_pruning, at 30% and
# 50% of each group's channels (onnx-prune at 30% also with --round-to 8), on a ResNet-18
# (torchvision layout, random init, 224x224, 8 samples; bench/shrink.py resnet18) exported by
# torch 2.15's TorchScript exporter and by its default (dynamo) exporter, and on the
# trained digits CNN of fixtures/shrink/real (450 labelled test samples, no fine-tuning after
# pruning). Per output: parameters, MACs per sample, tract and onnxruntime latency per sample
# (single-threaded), the output's max abs difference to the original (or test accuracy) and
# whether onnx.checker(full_check=True) accepts it. The onnx-prune rows are skipped, with a
# message, when the binary has no `shrink` subcommand; when it has one, a first table checks
# dead-channel removal (no --sparsity) on fixtures/shrink/real against its expected.json.
# Usage: bench/shrink.sh     (PYTHON=path/to/python picks the interpreter)
#   needs: pip install torch onnx onnxruntime numpy onnxsim==0.8.1 tract==0.23.9
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
out=bench/out/shrink
mkdir -p "$out"
[ -f "$out/resnet18.onnx" ] || "$py" bench/shrink.py resnet18 "$out/resnet18.onnx" "$out/resnet18_inputs.npz"
[ -f "$out/resnet18_dynamo.onnx" ] ||
  "$py" bench/shrink.py resnet18 "$out/resnet18_dynamo.onnx" "$out/resnet18_dynamo_inputs.npz" dynamo
cp fixtures/shrink/real/digits_cnn.onnx "$out/digits_cnn.onnx"
cp fixtures/shrink/real/digits_cnn_test_set.npz "$out/digits_cnn_inputs.npz"
# ONNX_PRUNE=path/to/onnx-prune skips the release build.
bin=${ONNX_PRUNE:-target/release/onnx-prune}
[ -n "${ONNX_PRUNE:-}" ] || cargo build --release --locked --quiet
since() { printf '%.2f' "$(echo "$(date +%s.%N) - $1" | bc)"; }
has_shrink=1
if ! "$bin" shrink --help > /dev/null 2>&1; then
  has_shrink=0
  echo "note: $bin has no 'shrink' subcommand: the onnx-prune rows are skipped" >&2
fi
if [ "$has_shrink" = 1 ]; then
  {
    echo "Dead channels only (no --sparsity) on fixtures/shrink/real: outputs must not change"
    echo
    mkdir -p "$out/dead"
    "$py" bench/shrink.py dead "$bin" "$out/dead"
    echo
  } | tee "$out/dead.md"
fi
{
  echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start; latency per sample,"
  echo "single-threaded, the fastest of 5 runs over the whole batch, original and pruned in turns;"
  echo "in brackets the ratio to the original's latency measured in the same turns"
  for name in resnet18 resnet18_dynamo digits_cnn; do
    model="$out/$name.onnx"
    inputs="$out/${name}_inputs.npz"
    labels=()
    [ "$name" = digits_cnn ] && labels=(labels)
    echo
    echo "$name ($inputs)"
    echo
    echo "| model | parameters | MACs per sample | tract ms | onnxruntime ms | outputs | onnx.checker full |"
    echo "|---|---|---|---|---|---|---|"
    "$py" bench/shrink.py row "original" "$model" "$model" "$inputs" "${labels[@]}"
    for sparsity in 0.3 0.5; do
      # onnx-prune: per group, and at 30% also with channel counts rounded to a multiple of 8
      # (at 50% these models' counts are multiples of 8 already; the rounding Torch-Pruning's
      # users needed for speed, its issue #38).
      flag_sets=("--sparsity $sparsity")
      [ "$sparsity" = 0.3 ] && flag_sets+=("--sparsity $sparsity --round-to 8")
      for flags in "${flag_sets[@]}"; do
        ours="$out/$name-shrink-${flags//[ -]/}.onnx"
        if [ "$has_shrink" = 1 ]; then
          rm -f "$ours"
          start=$(date +%s.%N)
          # shellcheck disable=SC2086 # the flags are words
          if "$bin" shrink "$model" -o "$ours" $flags --report "$ours.json" > "$ours.log" 2>&1; then
            took=$(since "$start")
            "$py" bench/shrink.py row "onnx-prune shrink $flags (${took}s)" "$model" "$ours" "$inputs" "${labels[@]}"
          else
            echo "| onnx-prune shrink $flags | failed: $(head -1 "$ours.log") | | | | | |"
          fi
        else
          echo "| onnx-prune shrink $flags | skipped: no shrink subcommand | | | | | |"
        fi
      done
      theirs="$out/$name-onnxsim-$sparsity.onnx"
      start=$(date +%s.%N)
      if "$py" bench/shrink.py onnxsim "$model" "$theirs" "$sparsity" > "$theirs.log" 2>&1; then
        took=$(since "$start")
        "$py" bench/shrink.py row "onnxsim 0.8.1 apply_structured_pruning($sparsity) (${took}s)" "$model" "$theirs" "$inputs" "${labels[@]}"
      else
        echo "| onnxsim 0.8.1 apply_structured_pruning($sparsity) | failed: $(tail -1 "$theirs.log") | | | | | |"
      fi
    done
  done
} | tee "$out/results.md"
