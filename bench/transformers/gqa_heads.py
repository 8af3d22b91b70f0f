#!/usr/bin/env python3
"""onnxruntime's fused GroupQueryAttention with its KV cache, shrunk, checked in onnxruntime
(run by hand, never by tests: tract does not run com.microsoft ops). Shrinks half of the KV
heads of `fixtures/transformers/gqa/llama_ort_gqa.onnx` (each with its query heads) with
`onnx-prune shrink --sparsity 0.5 --include q_proj --allow-interface-change`, and compares,
after `onnx.checker` full check of the shrunk model:

- the shrunk model fed the fixture's caches with the removed KV heads dropped, and
- the original with the removed query heads' output-projection rows zeroed (the masked
  original), fed the same kept heads and other values (-7x + 3) in the removed ones:

logits and the kept heads of every `present.*` output must agree.

    python3 bench/transformers/gqa_heads.py --onnx-prune target/release/onnx-prune
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
FIXTURES = os.path.join(REPOSITORY, "fixtures", "transformers", "gqa")


def masked(model, report):
    """`model` with the removed channels' consumer weights (output-projection rows) zeroed."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for group in report["groups"]:
        for consumer in group["consumers"] if group["removed"] else []:
            weight = inits[nodes[consumer].input[1]]
            values = numpy_helper.to_array(weight).copy()
            values[group["removed"], :] = 0
            weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx-prune", default="target/release/onnx-prune")
    args = parser.parse_args()
    original = os.path.join(FIXTURES, "llama_ort_gqa.onnx")
    feeds = dict(np.load(os.path.join(FIXTURES, "llama_ort_gqa_inputs.npz")))
    with tempfile.TemporaryDirectory() as tmp:
        shrunk, report = os.path.join(tmp, "shrunk.onnx"), os.path.join(tmp, "report.json")
        subprocess.run([args.onnx_prune, "shrink", original, "-o", shrunk, "--sparsity", "0.5",
                        "--include", "q_proj", "--allow-interface-change", "--report", report],
                       check=True, stdout=subprocess.DEVNULL)
        report = json.load(open(report))
        reference = os.path.join(tmp, "masked.onnx")
        onnx.save(masked(onnx.load(original), report), reference)
        model = onnx.load(shrunk)
        onnx.checker.check_model(model, full_check=True)
        changes = {c["name"]: c for c in report["interface_changes"]}
        small, scrambled = dict(feeds), dict(feeds)
        def kept(name, cache):
            removed = changes[name]["removed"]
            return [h for h in range(cache.shape[1]) if h not in removed]

        for name, cache in feeds.items():
            if name in changes:
                small[name] = np.ascontiguousarray(cache[:, kept(name, cache)])
                other = cache.copy()
                other[:, changes[name]["removed"]] = other[:, changes[name]["removed"]] * -7 + 3
                scrambled[name] = other
        names = [o.name for o in model.graph.output]
        a = dict(zip(names, ort.InferenceSession(reference).run(None, scrambled)))
        b = dict(zip(names, ort.InferenceSession(shrunk).run(None, small)))
        worst = float(np.abs(a["logits"] - b["logits"]).max())
        for name in names[1:]:
            worst = max(worst, float(np.abs(a[name][:, kept(name, a[name])] - b[name]).max()))
        heads = [(a.name, a.i) for n in model.graph.node for a in n.attribute
                 if n.op_type == "GroupQueryAttention" and a.name.endswith("num_heads")]
        print(f"llama_ort_gqa: {heads}, params {report['totals']['params_before']} -> "
              f"{report['totals']['params_after']}, {len(changes)} cache inputs/outputs "
              f"reshaped, checker ok, max |masked - shrunk| {worst:.3g}")
        assert worst < 1e-4, worst


if __name__ == "__main__":
    main()
