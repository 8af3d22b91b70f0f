#!/usr/bin/env python3
"""Models with a KV cache, shrunk with `--allow-interface-change`, checked in onnxruntime (run
by hand, never by tests; tests/shrink_kv.rs checks the Llama exports through tract, and tract
does not run the com.microsoft ops). Shrinks half of the heads of each model (the KV heads,
each with its query heads, under grouped-query attention) with `onnx-prune shrink --sparsity
0.5 --include PATTERN --allow-interface-change`, and compares, after `onnx.checker` full check
of the shrunk model:

- the shrunk model fed the fixture's caches with the removed heads dropped, and
- the original with the removed query heads' output-projection rows zeroed (the masked
  original), fed the same kept heads and other values (-7x + 3) in the removed ones:

logits and the kept heads of every `present*` output must agree. Models: the Llama exports
with a cache of `fixtures/transformers` (both torch exporters) and the decoders around
onnxruntime's fused GroupQueryAttention, MultiHeadAttention and Attention of
`fixtures/transformers/fused_kv`.

    python3 bench/transformers/kv_cache_heads.py --onnx-prune target/release/onnx-prune
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


# (folder under fixtures/transformers, model, inputs, --include pattern of the head groups)
MODELS = [
    ("", "llama_kv_torchscript", "llama_kv_inputs", "q_proj"),
    ("", "llama_kv_dynamo", "llama_kv_inputs", "^node_linear$"),
    ("fused_kv", "llama_ort_gqa", "llama_ort_gqa_inputs", "q_proj"),
    ("fused_kv", "decoder_ort_mha", "decoder_ort_mha_inputs", "q_proj"),
    ("fused_kv", "decoder_ort_attention", "decoder_ort_attention_inputs", "Attention"),
]


def check(folder, name, inputs, include, onnx_prune, tmp):
    """Shrinks fixture `name`, compares it with its masked original on `inputs`; prints and
    returns the largest difference."""
    original = os.path.join(FIXTURES, folder, name + ".onnx")
    feeds = dict(np.load(os.path.join(FIXTURES, folder, inputs + ".npz")))
    shrunk, report = os.path.join(tmp, name + ".onnx"), os.path.join(tmp, name + ".json")
    subprocess.run([onnx_prune, "shrink", original, "-o", shrunk, "--sparsity", "0.5",
                    "--include", include, "--allow-interface-change",
                    "--report", report], check=True, stdout=subprocess.DEVNULL)
    report = json.load(open(report))
    reference = os.path.join(tmp, name + "_masked.onnx")
    onnx.save(masked(onnx.load(original), report), reference)
    model = onnx.load(shrunk)
    onnx.checker.check_model(model, full_check=True)
    changes = {c["name"]: c for c in report["interface_changes"]}

    def kept(name, cache):
        change = changes[name]
        keep = [h for h in range(cache.shape[change["axis"]]) if h not in change["removed"]]
        return np.take(cache, keep, axis=change["axis"])

    small, scrambled = dict(feeds), dict(feeds)
    for cache_name, cache in feeds.items():
        if cache_name in changes:
            small[cache_name] = kept(cache_name, cache)
            removed = [slice(None)] * cache.ndim
            removed[changes[cache_name]["axis"]] = changes[cache_name]["removed"]
            other = cache.copy()
            other[tuple(removed)] = other[tuple(removed)] * -7 + 3
            scrambled[cache_name] = other
    names = [o.name for o in model.graph.output]
    a = dict(zip(names, ort.InferenceSession(reference).run(None, scrambled)))
    b = dict(zip(names, ort.InferenceSession(shrunk).run(None, small)))
    worst = float(np.abs(a["logits"] - b["logits"]).max())
    for output in names[1:]:
        worst = max(worst, float(np.abs(kept(output, a[output]) - b[output]).max()))
    heads = [(a.name, a.i) for n in model.graph.node for a in n.attribute
             if n.domain == "com.microsoft" and a.name.endswith("num_heads")]
    print(f"{name}: {heads or 'unfused'}, params {report['totals']['params_before']} -> "
          f"{report['totals']['params_after']}, {len(changes)} cache inputs/outputs "
          f"reshaped, checker ok, max |masked - shrunk| {worst:.3g}")
    return worst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx-prune", default="target/release/onnx-prune")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        worst = max(check(*model, args.onnx_prune, tmp) for model in MODELS)
    assert worst < 1e-4, worst


if __name__ == "__main__":
    main()
