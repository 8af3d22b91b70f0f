#!/usr/bin/env python3
"""Helpers of bench/calibrated.sh (needs: pip install onnx numpy onnxruntime onnxsim==0.8.1).

  calibrated.py generate MODEL CALIBRATION.npz   a seeded CNN + MLP head and 128 samples
  calibrated.py onnxsim METHOD MODEL CALIBRATION.npz OUT SPARSITY
                                                onnxsim 0.8.1's apply_wanda_pruning or
                                                apply_sparsegpt_pruning on the same data
  calibrated.py error DENSE PRUNED CALIBRATION.npz
                                                mean over pruned weights of
                                                ||XW^T - XW'^T||^2 / ||XW^T||^2 on the data,
                                                X from onnxruntime (im2col for Convs), and
                                                the pruned weights' sparsity
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def generate(model_path, data_path):
    rng = np.random.default_rng(7)

    def w(*shape):
        fan_in = int(np.prod(shape[1:]))
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

    inits, nodes = [], []

    def conv(x, name, out, cin, stride):
        t = w(out, cin, 3, 3); t.name = f"{name}.weight"
        b = numpy_helper.from_array((rng.standard_normal(out) * 0.1).astype(np.float32), f"{name}.bias")
        inits.extend([t, b])
        nodes.append(helper.make_node("Conv", [x, t.name, b.name], [name], name=name,
                                      pads=[1, 1, 1, 1], strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"]))
        return f"{name}.relu"

    x = conv("x", "conv1", 16, 3, 1)
    x = conv(x, "conv2", 32, 16, 2)
    x = conv(x, "conv3", 32, 32, 2)
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    t = w(128, 32 * 8 * 8); t.name = "fc1.weight"
    b = numpy_helper.from_array(np.zeros(128, np.float32), "fc1.bias")
    t2 = w(10, 128); t2.name = "fc2.weight"
    b2 = numpy_helper.from_array(np.zeros(10, np.float32), "fc2.bias")
    inits.extend([t, b, t2, b2])
    nodes.append(helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1"], transB=1))
    nodes.append(helper.make_node("Relu", ["fc1"], ["fc1.relu"]))
    nodes.append(helper.make_node("Gemm", ["fc1.relu", "fc2.weight", "fc2.bias"], ["y"], transB=1))
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, model_path)
    np.savez(data_path, x=rng.standard_normal((128, 3, 32, 32)).astype(np.float32))


def run_onnxsim(method, model_path, data_path, out, sparsity):
    import onnxsim
    x = np.load(data_path)["x"]
    batches = [{"x": x[i:i + 32]} for i in range(0, len(x), 32)]
    apply = {"wanda": onnxsim.apply_wanda_pruning, "sparsegpt": onnxsim.apply_sparsegpt_pruning}[method]
    pruned = apply(model_path, calibration_data=batches, sparsity=float(sparsity))
    onnx.save(pruned, out)


def layers(model):
    """(weight name, op, activation name, node) for every Conv/Gemm weight."""
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            yield node.input[1], node.op_type, node.input[0], node


def activations(model_path, names, x):
    import onnxruntime as ort
    model = onnx.load(model_path)
    for name in names:
        if name not in [i.name for i in model.graph.input]:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"x": x})
    values = dict(zip([o.name for o in model.graph.output], outputs))
    values["x"] = x
    return values


def im2col(x, kernel, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, oh, ow, kh, kw = windows.shape
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def error(dense_path, pruned_path, data_path):
    dense, pruned = onnx.load(dense_path), onnx.load(pruned_path)
    weights = lambda m: {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}
    before, after = weights(dense), weights(pruned)
    x = np.load(data_path)["x"]
    found = list(layers(dense))
    acts = activations(dense_path, [a for _, _, a, _ in found], x)
    errors, zeros, params = [], 0, 0
    for name, op, act, node in found:
        zeros += int(np.count_nonzero(after[name] == 0))
        params += after[name].size
        a = acts[act].astype(np.float64)
        if op == "Conv":
            attrs = {at.name: helper.get_attribute_value(at) for at in node.attribute}
            k = before[name].shape[2]
            X = im2col(a, (k, k), attrs.get("strides", [1])[0], attrs.get("pads", [0])[0])
            W, W2 = before[name].reshape(before[name].shape[0], -1), after[name].reshape(before[name].shape[0], -1)
        else:
            X = a.reshape(-1, a.shape[-1])
            W, W2 = before[name], after[name]
        H = X.T @ X
        d = W - W2
        errors.append(np.einsum("ij,jk,ik->", d, H, d) / np.einsum("ij,jk,ik->", W, H, W))
    # Two table cells: the mean error, and the pruned weights' sparsity (the methods count
    # zeros per row differently: round(S x cols) here, int(S x cols) in onnxsim).
    print(f"{np.mean(errors):.4f} | {zeros / params:.4f}")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"generate": generate, "onnxsim": run_onnxsim, "error": error}[command](*args)
