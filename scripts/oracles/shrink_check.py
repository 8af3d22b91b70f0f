#!/usr/bin/env python3
"""Cross-checks a shrunk model against its original with the ONNX tools themselves, independent
of onnx-prune and tract: `onnx.checker.check_model(full_check=True)` on both, parameters and
multiply-accumulates (MACs per sample) of both, then both run through onnxruntime on the same
inputs: output shapes, max abs difference (or accuracy with labels) and latency per sample.

Usage: scripts/oracles/shrink_check.py ORIGINAL SHRUNK INPUTS.npz [--labels KEY] [--max-diff X]
                                     [--masked REPORT.json] [--threads N] [--repeat N] [--json]
  INPUTS.npz holds one array per model input, named as the input, sample axis first (other
  keys, e.g. the labels, are ignored as inputs). Exit 0 when the shrunk model passes the checker
  and gives the original's output shapes (and --max-diff, when given, holds); 1 otherwise.
Needs: pip install onnx onnxruntime numpy
"""
import argparse
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
          onnx.TensorProto.DOUBLE}


def checker(model):
    """None when onnx.checker with full shape inference accepts the model, else its message."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return None
    except Exception as e:  # the checker raises ValidationError and InferenceError
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"


def parameters(model):
    """Elements of every floating-point initializer and Constant tensor (the weights)."""
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                if a.name == "value"]
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in tensors if t.data_type in FLOATS))


def inputs_of(model):
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def macs(model, feeds):
    """Multiply-accumulates for one sample of Conv, ConvTranspose, Gemm and MatMul, from the
    shapes onnxruntime gives when it runs the first sample (so that neither a stale value_info
    nor a shape that onnx's inference cannot follow, such as a Reshape fed by Shape/Slice,
    matters)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    ops = [n for n in m.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    weights = {t.name: list(t.dims) for t in m.graph.initializer}
    weights.update({n.output[0]: list(a.t.dims) for n in m.graph.node if n.op_type == "Constant"
                    for a in n.attribute if a.name == "value"})
    wanted = {n.input[0] for n in ops} | {n.output[0] for n in ops}
    wanted -= set(weights) | {i.name for i in m.graph.input} | {o.name for o in m.graph.output}
    for name in sorted(wanted):
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    del m.graph.value_info[:]
    sess = session(m, 1)
    values = sess.run(None, {k: v[:1] for k, v in feeds.items()})
    shapes = {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), values)}
    shapes.update({k: list(v[:1].shape) for k, v in feeds.items()})
    shapes.update(weights)
    total = 0
    for n in ops:
        a, w, out = shapes[n.input[0]], shapes[n.input[1]], shapes[n.output[0]]
        if n.op_type == "Conv":
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose":
            total += int(np.prod(a)) * int(np.prod(w[1:]))
        else:  # Gemm, MatMul: every output element sums K products
            trans_a = any(x.name == "transA" and x.i for x in n.attribute)
            k = a[0] if trans_a and n.op_type == "Gemm" else a[-1]
            total += int(np.prod(out)) * int(k)
    return total


def session(model, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def timed(runners, repeat, samples):
    """Seconds per sample of each runner (a callable that runs one batch): the fastest of
    `repeat` rounds after one warm-up, the runners taking turns within each round so that load
    from other processes falls on all of them alike (the minimum, since load only adds time)."""
    for runner in runners:
        runner()
    best = [float("inf")] * len(runners)
    for _ in range(repeat):
        for i, runner in enumerate(runners):
            start = time.perf_counter()
            runner()
            best[i] = min(best[i], time.perf_counter() - start)
    return [b / samples for b in best]


def cosine(a, b):
    """The smallest per-sample cosine similarity between two outputs (sample axis first)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    dot = np.sum(a * b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(np.where(norms > 0, dot / np.maximum(norms, 1e-300), 1.0)))


def masked(model, report_path):
    """A copy of `model` with, for every group of an onnx-prune shrink report, the removed
    channels' producer weights and biases zeroed (Conv axis 0, ConvTranspose axis 1 within each
    group, Gemm by transB, MatMul axis 1), and on the way to the consumers the channels of
    depthwise Convs (weights, bias) and BatchNormalization (scale, bias) too. Where every other
    op on the way maps 0 to 0 (ReLU, SiLU, Add, Mul, pooling), the shrunk model must give its
    outputs to float rounding: a check of the rewrite that does not trust the report's own
    arithmetic. Groups whose producers do not all have the group's channel count are left as
    they are."""
    import json

    from onnx import numpy_helper

    with open(report_path) as f:
        groups = json.load(f)["groups"]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = {n.name: n for n in m.graph.node}
    tensors = {t.name: t for t in m.graph.initializer}
    for group in groups:
        if not group["removed"]:
            continue
        edits = []
        for name in group["producers"]:
            node = nodes[name]
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            w = numpy_helper.to_array(tensors[node.input[1]]).copy()
            if node.op_type == "ConvTranspose":
                g = attrs.get("group", 1)
                out = w.shape[1] * g
                axis_index = lambda c, w=w, g=g: (slice(c // w.shape[1] * (w.shape[0] // g), (c // w.shape[1] + 1) * (w.shape[0] // g)), c % w.shape[1])  # noqa: E731
            elif node.op_type == "Conv" or (node.op_type == "Gemm" and attrs.get("transB", 0)):
                out, axis_index = w.shape[0], (lambda c: (c,))
            else:
                out, axis_index = w.shape[1], (lambda c: (slice(None), c))
            if out != group["channels_before"]:
                edits = None
                break
            edits.append((node, w, axis_index))
        if edits is None:
            print(f"shrink_check: group {group.get('id')} skipped: a producer's channels differ "
                  f"from the group's {group['channels_before']}", file=sys.stderr)
            continue
        zero_on_the_way(m, tensors, group)
        for node, w, axis_index in edits:
            for c in group["removed"]:
                w[axis_index(c)] = 0
            tensors[node.input[1]].CopyFrom(numpy_helper.from_array(w, node.input[1]))
            if len(node.input) > 2 and node.input[2] in tensors:
                b = numpy_helper.to_array(tensors[node.input[2]]).copy()
                b[group["removed"]] = 0
                tensors[node.input[2]].CopyFrom(numpy_helper.from_array(b, node.input[2]))
    return m


def zero_on_the_way(m, tensors, group):
    """Zeroes the removed channels of the depthwise Convs and BatchNormalizations between the
    group's producers and its consumers (they carry the channels through with a bias)."""
    from onnx import numpy_helper

    def zero(name, channels):
        a = numpy_helper.to_array(tensors[name]).copy()
        a[channels] = 0
        tensors[name].CopyFrom(numpy_helper.from_array(a, name))

    names = {n.name: n for n in m.graph.node}
    stop = set(group["consumers"])
    pending = [o for p in group["producers"] for o in names[p].output]
    seen = set()
    while pending:
        tensor = pending.pop()
        for n in m.graph.node:
            if tensor not in n.input or n.name in stop or n.name in seen:
                continue
            seen.add(n.name)
            if n.op_type == "BatchNormalization":
                zero(n.input[1], group["removed"])
                zero(n.input[2], group["removed"])
            elif n.op_type == "Conv":  # on the way, only a depthwise Conv (pass-through)
                zero(n.input[1], group["removed"])
                if len(n.input) > 2 and n.input[2] in tensors:
                    zero(n.input[2], group["removed"])
            pending.extend(n.output)


def compare(original_path, shrunk_path, npz_path, labels=None, threads=1, repeat=5, report=None):
    """Everything the report prints, as a dict; with `report`, the outputs are compared with
    the original's after masking the removed channels (see `masked`)."""
    original, shrunk = onnx.load(original_path), onnx.load(shrunk_path)
    if report is not None:
        original = masked(original, report)
    data = np.load(npz_path)
    names = [i.name for i in inputs_of(original)]
    missing = [n for n in names if n not in data.files]
    if missing:
        raise SystemExit(f"shrink_check: {npz_path} has no array for input(s) {missing} "
                         f"(it has {data.files})")
    feeds = {n: data[n] for n in names}
    result = {
        "checker_original": checker(original), "checker_shrunk": checker(shrunk),
        "params_original": parameters(original), "params_shrunk": parameters(shrunk),
        "macs_original": macs(original, feeds),
        "macs_shrunk": macs(shrunk, feeds),
        "samples": int(next(iter(feeds.values())).shape[0]),
    }
    sess_a, sess_b = session(original, threads), session(shrunk, threads)
    out_a, out_b = sess_a.run(None, feeds), sess_b.run(None, feeds)
    result["latency_original_s"], result["latency_shrunk_s"] = timed(
        [lambda: sess_a.run(None, feeds), lambda: sess_b.run(None, feeds)], repeat, result["samples"])
    result["output_shapes_original"] = [list(o.shape) for o in out_a]
    result["output_shapes_shrunk"] = [list(o.shape) for o in out_b]
    result["same_shapes"] = result["output_shapes_original"] == result["output_shapes_shrunk"]
    if result["same_shapes"]:
        result["max_abs_diff"] = max(float(np.max(np.abs(a.astype(np.float64) - b)))
                                     for a, b in zip(out_a, out_b))
        result["min_cosine"] = min(cosine(a, b) for a, b in zip(out_a, out_b))
    if labels is not None:
        truth = data[labels].reshape(-1)
        for key, out in (("accuracy_original", out_a), ("accuracy_shrunk", out_b)):
            result[key] = float(np.mean(out[0].reshape(len(truth), -1).argmax(1) == truth))
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("original")
    p.add_argument("shrunk")
    p.add_argument("inputs", help="npz: one array per model input, sample axis first")
    p.add_argument("--labels", help="key of integer class labels in the npz (accuracy of output 0)")
    p.add_argument("--max-diff", type=float, help="fail (exit 1) above this max abs difference")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs; the fastest is reported")
    p.add_argument("--masked", metavar="REPORT", help="compare with the original whose removed "
                   "channels (from this onnx-prune shrink --report) are zeroed in the producers")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    r = compare(args.original, args.shrunk, args.inputs, args.labels, args.threads, args.repeat,
                args.masked)
    ok = r["checker_shrunk"] is None and r["same_shapes"]
    if args.max_diff is not None and r.get("max_abs_diff", np.inf) > args.max_diff:
        ok = False
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"checker (full_check)  original: {r['checker_original'] or 'ok'}")
        print(f"                      shrunk:   {r['checker_shrunk'] or 'ok'}")
        print(f"parameters            {r['params_original']:,} -> {r['params_shrunk']:,} "
              f"({r['params_shrunk'] / r['params_original']:.3f}x)")
        print(f"MACs per sample       {r['macs_original']:,} -> {r['macs_shrunk']:,} "
              f"({r['macs_shrunk'] / max(r['macs_original'], 1):.3f}x)")
        print(f"output shapes         {r['output_shapes_original']} -> {r['output_shapes_shrunk']}"
              f" ({'same' if r['same_shapes'] else 'DIFFERENT'})")
        if "max_abs_diff" in r:
            print(f"max abs diff          {r['max_abs_diff']:.3g} (min cosine {r['min_cosine']:.6f})")
        if "accuracy_original" in r:
            print(f"accuracy              {r['accuracy_original']:.4f} -> {r['accuracy_shrunk']:.4f}")
        print(f"onnxruntime latency   {r['latency_original_s'] * 1e3:.4f} -> "
              f"{r['latency_shrunk_s'] * 1e3:.4f} ms per sample ({args.threads} thread(s), "
              f"{r['samples']} samples, best of {args.repeat})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
