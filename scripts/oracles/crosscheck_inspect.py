#!/usr/bin/env python3
"""Cross-checks `onnx-prune inspect --json` against the onnx Python package on many models.

For every model: the number of floating-point constant tensors (initializers, sparse
initializers, Constant `value`/`sparse_value`, in subgraphs at any depth), their elements and
their zeros must agree. Usage: scripts/oracles/crosscheck_inspect.py BINARY MODEL_OR_DIR...
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx_files import onnx_files
from onnx import numpy_helper

FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}

def walk(graph, base):
    for t in graph.initializer:
        if t.data_type in FLOATS:
            yield numpy_helper.to_array(t, base_dir=base)
    for s in graph.sparse_initializer:
        if s.values.data_type in FLOATS:
            values = numpy_helper.to_array(s.values)
            yield (int(np.prod(s.dims)), int(np.prod(s.dims)) - values.size + int((values == 0).sum()))
    for node in graph.node:
        for a in node.attribute:
            if node.op_type == "Constant" and node.domain == "" and a.name == "value" and a.t.data_type in FLOATS:
                yield numpy_helper.to_array(a.t, base_dir=base)
            if node.op_type == "Constant" and node.domain == "" and a.name == "sparse_value" and a.sparse_tensor.values.data_type in FLOATS:
                s = a.sparse_tensor
                values = numpy_helper.to_array(s.values)
                yield (int(np.prod(s.dims)), int(np.prod(s.dims)) - values.size + int((values == 0).sum()))
            if a.type == onnx.AttributeProto.GRAPH:
                yield from walk(a.g, base)
            for g in a.graphs:
                yield from walk(g, base)

def expected(path):
    m = onnx.load(path, load_external_data=False)
    counts = []
    for x in walk(m.graph, os.path.dirname(path)):
        if isinstance(x, tuple):
            counts.append(x)
        else:
            counts.append((int(x.size), int((x.astype(np.float64) == 0).sum())))
    return sorted(counts)

def main():
    binary, *targets = sys.argv[1:]
    files = onnx_files(targets)
    agree = 0
    for f in files:
        out = subprocess.run([binary, "inspect", f, "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"FAIL {f}: {out.stderr.strip()}")
            continue
        got = sorted((w["params"], w["zeros"]) for w in json.loads(out.stdout)["weights"])
        want = expected(f)
        if got == want:
            agree += 1
        else:
            print(f"MISMATCH {f}: onnx-prune {len(got)} weights, onnx {len(want)}")
    print(f"{agree} of {len(files)} models agree")

if __name__ == "__main__":
    main()
