#!/usr/bin/env python3
"""The obvious onnxruntime loop a user writes to compare two models: one sample per run,
reference then candidate, max abs difference and cosine of the outputs.

Usage: bench/check/ort_check.py REFERENCE.onnx CANDIDATE.onnx INPUTS.npz
Needs: pip install onnxruntime numpy.
"""
import sys

import numpy as np
import onnxruntime as ort

reference = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
candidate = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
data = np.load(sys.argv[3])
name = reference.get_inputs()[0].name
x = data[name]
expected, actual = [], []
for i in range(len(x)):
    feed = {name: x[i:i + 1]}
    expected.append(reference.run(None, feed)[0])
    actual.append(candidate.run(None, feed)[0])
e, a = np.concatenate(expected).ravel(), np.concatenate(actual).ravel()
cosine = float(e @ a / (np.linalg.norm(e) * np.linalg.norm(a)))
print(f"{len(x)} samples: max abs {np.abs(e - a).max():.6f}, cosine {cosine:.6f}")
