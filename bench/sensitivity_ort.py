#!/usr/bin/env python3
"""The obvious alternative to `onnx-prune sensitivity`: for each weight and each sparsity, zero
the weight's smallest magnitudes with numpy, load the candidate into onnxruntime and run every
sample, and measure 1 - cosine of the outputs against the dense model's (the lowest over
outputs, as onnx-prune's `cosine_drop`).

Usage: bench/sensitivity_ort.py MODEL.onnx INPUTS.npz WEIGHTS.txt SPARSITIES OUT.json
  WEIGHTS.txt: one initializer name a line (bench/sensitivity.sh writes the weights that
  `onnx-prune inspect --json` marks prunable); SPARSITIES: comma-separated.
Needs: pip install onnx onnxruntime numpy.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

model_path, inputs_path, weights_path, sparsities, out_path = sys.argv[1:6]
sparsities = [float(s) for s in sparsities.split(",")]
model = onnx.load(model_path)
names = [line.strip() for line in open(weights_path) if line.strip()]
by_name = {t.name: t for t in model.graph.initializer}
data = np.load(inputs_path)
feeds_names = [i.name for i in model.graph.input if i.name not in by_name]
samples = len(data[feeds_names[0]])


def run(session):
    """Every output over every sample, one sample per run (the export's batch is 1)."""
    runs = [session.run(None, {n: data[n][s:s + 1] for n in feeds_names}) for s in range(samples)]
    return [np.concatenate([r[o] for r in runs]).ravel().astype(np.float64) for o in range(len(runs[0]))]


def session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


dense = run(session(model))
curves = []
for name in names:
    tensor = by_name[name]
    original = numpy_helper.to_array(tensor)
    values = []
    for sparsity in sparsities:
        flat = original.ravel().copy()
        zeros = int(round(sparsity * flat.size))
        flat[np.argsort(np.abs(flat), kind="stable")[:zeros]] = 0
        tensor.CopyFrom(numpy_helper.from_array(flat.reshape(original.shape), name))
        outputs = run(session(model))
        cosine = min(
            float(e @ a / (np.linalg.norm(e) * np.linalg.norm(a))) for e, a in zip(dense, outputs)
        )
        values.append(1.0 - cosine)
    tensor.CopyFrom(numpy_helper.from_array(original, name))
    curves.append({"id": name, "values": values})
json.dump({"sparsities": sparsities, "weights": curves}, open(out_path, "w"), indent=1)
print(f"{len(names)} weights x {len(sparsities)} sparsities on {samples} samples")
