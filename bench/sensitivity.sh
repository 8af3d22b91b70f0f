#!/usr/bin/env bash
# `onnx-prune sensitivity` and `prune --sparsity auto` on a detector-sized model (YOLOv8n,
# 63 Conv weights, 8 images of 320x320: bench/yolov8n.py) against the obvious onnxruntime loop
# (bench/sensitivity_ort.py: numpy prunes each candidate, onnxruntime loads and runs it), and
# against one `check` of the model on the same samples. For each: seconds and CPU seconds
# (user + system: what a shared machine's load does not inflate).
# Usage: bench/sensitivity.sh   (about 5 minutes on 2 cores)
#   needs: pip install torch ultralytics onnx onnxslim onnxruntime numpy; GNU time
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out/sensitivity
mkdir -p "$out"
[ -f "$out/yolov8n.onnx" ] || python3 bench/yolov8n.py "$out"
model=$out/yolov8n.onnx
inputs=$out/inputs.npz
# ONNX_PRUNE=path/to/onnx-prune skips the release build (e.g. a debug binary, for figures only).
bin=${ONNX_PRUNE:-target/release/onnx-prune}
[ -n "${ONNX_PRUNE:-}" ] || cargo build --release --locked --quiet
measure() { # name, command...
  local name=$1; shift
  /usr/bin/time -f "%e %U %S" -o "$out/time.txt" "$@" > /dev/null
  read -r seconds user sys < "$out/time.txt"
  printf '| %s | %s | %s |\n' "$name" "$seconds" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')"
}
"$bin" inspect "$model" --json > "$out/inspect.json"
python3 -c "import json, sys; [print(w['name']) for w in json.load(open(sys.argv[1]))['weights'] if w['prunable']]" \
  "$out/inspect.json" > "$out/weights.txt"
three=0.3,0.6,0.9
echo "$(wc -l < "$out/weights.txt") weights, $(nproc) cores"
echo
echo "| what | seconds | CPU seconds |"
echo "|---|---|---|"
measure "check, the model against itself" "$bin" check "$model" "$model" --inputs "$inputs"
measure "sensitivity, 3 sparsities" "$bin" sensitivity "$model" --inputs "$inputs" --sparsities "$three" --report "$out/curves3.json"
measure "sensitivity, 3 sparsities, --jobs 1" "$bin" sensitivity "$model" --inputs "$inputs" --sparsities "$three" --jobs 1 --report "$out/curves3_jobs1.json"
measure "sensitivity, default 9 sparsities" "$bin" sensitivity "$model" --inputs "$inputs" --report "$out/curves9.json"
measure "prune --sparsity auto --min-cosine 0.99" "$bin" prune "$model" -o "$out/auto.onnx" --sparsity auto --inputs "$inputs" --min-cosine 0.99 --report "$out/auto.json"
measure "onnxruntime loop, 3 sparsities" python3 bench/sensitivity_ort.py "$model" "$inputs" "$out/weights.txt" "$three" "$out/ort3.json"
# The two sets of curves measure the same thing: print how far apart they are.
python3 - "$out/curves3.json" "$out/ort3.json" <<'PY'
import json, sys
ours, theirs = (json.load(open(p))["weights"] for p in sys.argv[1:3])
by_id = {w["id"]: w["values"] for w in theirs}
gap = max(abs(a - b) for w in ours for a, b in zip(w["values"], by_id[w["id"]]))
print(f"\nlargest difference between the two sets of curves (1 - cosine): {gap:.2e}")
PY
