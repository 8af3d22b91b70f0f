#!/usr/bin/env python3
"""The obvious alternative to `onnx-prune prune --scope global`: onnx + numpy.

Loads the model, finds one global magnitude threshold over the Gemm weights with np.partition,
zeroes everything below it, and saves. Usage: bench/numpy_prune.py IN.onnx OUT.onnx SPARSITY
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper

src, dst, sparsity = sys.argv[1], sys.argv[2], float(sys.argv[3])
model = onnx.load(src)
weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2]
arrays = [numpy_helper.to_array(t) for t in weights]
magnitudes = np.concatenate([np.abs(a).ravel() for a in arrays])
k = int(round(sparsity * magnitudes.size))
threshold = np.partition(magnitudes, k - 1)[k - 1] if k > 0 else -1.0
del magnitudes
for t, a in zip(weights, arrays):
    pruned = np.where(np.abs(a) <= threshold, np.float32(0), a)
    t.raw_data = pruned.tobytes()
onnx.save(model, dst)
