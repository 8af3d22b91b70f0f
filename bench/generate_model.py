#!/usr/bin/env python3
"""Writes a model of LAYERS Gemm layers of SIZE x SIZE float32 weights (default 16 x 4096^2 = 1 GiB).

Usage: bench/generate_model.py OUT.onnx [LAYERS] [SIZE]
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
layers = int(sys.argv[2]) if len(sys.argv) > 2 else 16
size = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
rng = np.random.default_rng(0)
inits, nodes, x = [], [], "x"
for i in range(layers):
    w = rng.standard_normal((size, size), dtype=np.float32)
    inits.append(numpy_helper.from_array(w, f"layer{i}.weight"))
    nodes.append(helper.make_node("Gemm", [x, f"layer{i}.weight"], [f"h{i}"], name=f"layer{i}", transB=1))
    x = f"h{i}"
graph = helper.make_graph(
    nodes, "bench",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
    [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, size])],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
with open(out, "wb") as f:
    f.write(model.SerializeToString())
