#!/usr/bin/env python3
"""Fused attention heads checked in onnxruntime (run by hand, never by tests: tract does not run
com.microsoft ops). For each onnxruntime-fused fixture, shrinks half of every open group with
`onnx-prune shrink --sparsity 0.5`, zeroes the same channels' consumer weights in the original
(the masked original), and compares both in onnxruntime on the fixture's inputs, after
`onnx.checker` full check of the shrunk model.

    python3 bench/transformers/fused_heads.py --onnx-prune target/release/onnx-prune
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPOSITORY, "fixtures", "transformers")
MODELS = ["bert_ort_attention", "bert_ort_mha"]


def masked(model, report):
    """`model` with the removed channels' consumer weights zeroed (rows, or columns of a
    transposed Gemm weight)."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for group in report["groups"]:
        for consumer in group["consumers"] if group["removed"] else []:
            node = nodes[consumer]
            weight = inits[node.input[1]]
            values = numpy_helper.to_array(weight).copy()
            if any(a.name == "transB" and a.i for a in node.attribute):
                values[:, group["removed"]] = 0
            else:
                values[group["removed"], :] = 0
            weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx-prune", default="target/release/onnx-prune")
    args = parser.parse_args()
    feeds_all = np.load(os.path.join(FIXTURES, "bert_inputs.npz"))
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            original = os.path.join(FIXTURES, name + ".onnx")
            shrunk, report = os.path.join(tmp, name + ".onnx"), os.path.join(tmp, name + ".json")
            subprocess.run([args.onnx_prune, "shrink", original, "-o", shrunk,
                            "--sparsity", "0.5", "--report", report], check=True,
                           stdout=subprocess.DEVNULL)
            report = json.load(open(report))
            reference = os.path.join(tmp, name + "_masked.onnx")
            onnx.save(masked(onnx.load(original), report), reference)
            model = onnx.load(shrunk)
            onnx.checker.check_model(model, full_check=True)
            heads = [a.i for n in model.graph.node for a in n.attribute
                     if n.domain == "com.microsoft" and a.name == "num_heads"]
            feeds = {i.name: feeds_all[i.name] for i in model.graph.input}
            a = ort.InferenceSession(reference).run(None, feeds)[0]
            b = ort.InferenceSession(shrunk).run(None, feeds)[0]
            print(f"{name}: num_heads {heads}, params {report['totals']['params_before']} -> "
                  f"{report['totals']['params_after']}, checker ok, max |masked - shrunk| "
                  f"{float(np.abs(a - b).max()):.3g}")


if __name__ == "__main__":
    main()
