#!/usr/bin/env python3
"""Helpers for bench/shrink.sh (structured pruning: onnx-prune shrink vs onnxsim 0.8.1's
apply_structured_pruning).

  shrink.py resnet18 MODEL.onnx INPUTS.npz [torchscript|dynamo]
      ResNet-18 in torchvision's layout (BasicBlocks [2, 2, 2, 2], widths 64-512, 1000 classes),
      random init with randomised BatchNorm statistics, exported by torch.onnx.export in eval
      mode with a dynamic batch, BatchNorm folded: by the TorchScript exporter (opset 17,
      default) or by the dynamo one (torch 2.15's default, opset 18, every intermediate shape
      in value_info), with 8 random 3x224x224 inputs.
  shrink.py onnxsim MODEL.onnx OUT.onnx SPARSITY
      onnxsim.apply_structured_pruning(model, SPARSITY) (L2 importance, per layer), saved.
  shrink.py dead ONNX_PRUNE OUT_DIR
      Runs `ONNX_PRUNE shrink MODEL -o OUT` (no --sparsity: dead channels only) on every model of
      fixtures/shrink/real/expected.json with dead groups; one markdown row each: parameters
      before, after and as expected.json says once every dead group is gone (the per-group
      figures explain a group left in place), the max abs output difference through onnxruntime
      and onnx.checker(full_check=True).
  shrink.py row NAME ORIGINAL.onnx PRUNED.onnx INPUTS.npz [LABELS_KEY]
      One markdown row: onnx.checker(full_check=True), parameters, MACs per sample, tract and
      onnxruntime latency per sample and its ratio to the original's (both single-threaded, the
      fastest of 5 timed runs of the whole batch, original and pruned taking turns), and the
      output's max abs difference to the original (or accuracy with labels). tract runs through
      its Python bindings (the `tract` package, the tract version onnx-prune links).
      PRUNED.onnx.json, an onnx-prune report, when present, must give the same params_after and
      macs_after as counted here, and the row adds the max abs difference to the original with
      the reported channels zeroed (scripts/oracles/shrink_check.py --masked), which must be
      rounding.
Needs: pip install torch onnx onnxruntime numpy onnxsim==0.8.1 tract==0.23.9
"""
import os
import sys
import time

import numpy as np
import onnx

# The cross-check lives with the other oracle scripts, in scripts/oracles/ of the repository.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts", "oracles"))
import shrink_check  # noqa: E402  (the same checker, parameter and MAC counts as the cross-check)

REPEAT = 5


def resnet18(model_path, inputs_path, exporter="torchscript"):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            widths = [64, 128, 256, 512]
            stages, cin = [], 64
            for i, w in enumerate(widths):
                stages.append(nn.Sequential(Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)))
                cin = w
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(0)
    model = ResNet18()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=gen)
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) * 0.5 + 0.5
            m.bias.data = torch.randn(c, generator=gen) * 0.1
            m.running_mean = torch.randn(c, generator=gen) * 0.1
            m.running_var = torch.rand(c, generator=gen) + 0.5
    model.eval()
    example = (torch.zeros(1, 3, 224, 224),)
    if exporter == "dynamo":
        torch.onnx.export(model, example, model_path, input_names=["input"], output_names=["logits"],
                          dynamic_shapes={"x": {0: torch.export.Dim("N")}}, opset_version=18,
                          dynamo=True, external_data=False)
    else:
        torch.onnx.export(model, example, model_path, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17,
                          do_constant_folding=True, dynamo=False)
    x = np.random.default_rng(2).standard_normal((8, 3, 224, 224)).astype(np.float32)
    np.savez(inputs_path, input=x)


def onnxsim_prune(model_path, out_path, sparsity):
    import onnxsim

    onnx.save(onnxsim.apply_structured_pruning(onnx.load(model_path), sparsity=float(sparsity)), out_path)


def tract_latency(paths, feeds):
    """Seconds per sample of tract (optimised, single-threaded) on the whole batch for each
    model, timed in turns (shrink_check.timed); an error message instead when tract cannot load
    or run one of them."""
    import tract

    runners = []
    try:
        for path in paths:
            # A batch axis the model names (dim_param) stays a symbol, bound after analysis: a
            # concrete input fact would clash with the same symbol in value_info (dynamo exports).
            declared = {i.name: i.type.tensor_type.shape.dim for i in onnx.load(path).graph.input}
            model = tract.onnx().load(path)
            ordered = [feeds[model.input_name(i)] for i in range(model.input_count())]
            symbols = {}
            for i, array in enumerate(ordered):
                dims = declared[model.input_name(i)]
                if dims and dims[0].dim_param:
                    symbols[dims[0].dim_param] = int(array.shape[0])
                else:
                    model.set_input_fact(i, ",".join(map(str, array.shape)) + ",f32")
            typed = model.into_model()
            if symbols:
                typed.transform(tract.SetSymbols(symbols))
            runnable = typed.into_runnable()
            runners.append(lambda runnable=runnable, ordered=ordered: runnable.run(ordered))
        return shrink_check.timed(runners, REPEAT, len(next(iter(feeds.values())))), None
    except Exception as e:  # tract raises TractError with a backtrace; keep its first line
        return None, str(e).strip().splitlines()[0][:120]


def report_totals(path):
    """`params_after` and `macs_after` from an onnx-prune report (wherever they sit in it), or
    an empty dict without a report."""
    import json

    if not os.path.exists(path):
        return {}
    found = {}

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("params_after", "macs_after") and isinstance(item, (int, float)):
                    found.setdefault(key, item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    with open(path) as f:
        walk(json.load(f))
    return found


def row(name, original, pruned, inputs, labels=None):
    r = shrink_check.compare(original, pruned, inputs, labels, threads=1, repeat=REPEAT)
    model = onnx.load(pruned)
    names = [i.name for i in shrink_check.inputs_of(model)]
    data = np.load(inputs)
    tract_s, tract_error = tract_latency([original, pruned], {n: data[n] for n in names})
    quality = (f"accuracy {r['accuracy_shrunk']:.4f}" if labels else
               f"max abs diff {r['max_abs_diff']:.3g}, cosine {r['min_cosine']:.4f}" if "max_abs_diff" in r else
               f"output shapes differ: {r['output_shapes_shrunk']}")
    checker = "pass" if r["checker_shrunk"] is None else f"FAIL ({r['checker_shrunk'][:90]})"
    # onnx-prune's own report (OUT.onnx.json) must agree with the counts made here, and the
    # output must equal the original's with the reported channels zeroed (shrink_check.masked).
    if os.path.exists(pruned + ".json"):
        m = shrink_check.compare(original, pruned, inputs, repeat=1, report=pruned + ".json")
        quality += f"; vs masked original {m.get('max_abs_diff', float('nan')):.2g}"
    claims = report_totals(pruned + ".json")
    for key, mine in (("params_after", r["params_shrunk"]), ("macs_after", r["macs_shrunk"])):
        if key in claims and claims[key] != mine:
            quality += f"; its report says {key} {claims[key]:,}, counted here {mine:,}"
    tract_ms = (f"{tract_s[1] * 1e3:.3g} ({tract_s[1] / tract_s[0]:.2f}x)" if tract_s is not None
                else f"fails: {tract_error}")
    ort_ms = f"{r['latency_shrunk_s'] * 1e3:.3g} ({r['latency_shrunk_s'] / r['latency_original_s']:.2f}x)"
    print(f"| {name} | {r['params_shrunk']:,} | {r['macs_shrunk'] / 1e6:.3f}M "
          f"| {tract_ms} | {ort_ms} | {quality} | {checker} |")


def initializer_parameters(path):
    """Elements of the initializers, as expected.json counts them."""
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in onnx.load(path).graph.initializer))


def dead(binary, out_dir):
    import json
    import subprocess

    real = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "fixtures", "shrink", "real")
    with open(os.path.join(real, "expected.json")) as f:
        models = json.load(f)["models"]
    print("| model | parameters | after shrink | expected (per group removed) | max abs diff | onnx.checker full |")
    print("|---|---|---|---|---|---|")
    for name, facts in models.items():
        if "dead" not in facts:
            continue
        model, out = os.path.join(real, name), os.path.join(out_dir, name)
        expected = f"{facts['parameters_after_removing_dead']:,} ({', '.join(str(g['parameters_removed']) for g in facts['dead'])})"
        done = subprocess.run([binary, "shrink", model, "-o", out], capture_output=True, text=True)
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["(no message)"])[0][:120]
            print(f"| {name} | {facts['parameters']:,} | exit {done.returncode}: {message} | {expected} | | |")
            continue
        r = shrink_check.compare(model, out, os.path.join(real, facts["inputs"]), facts.get("labels"),
                                 repeat=1)
        diff = f"{r['max_abs_diff']:.3g}" if "max_abs_diff" in r else f"shapes {r['output_shapes_shrunk']}"
        if "accuracy_original" in r:
            diff += f" (accuracy {r['accuracy_original']:.4f} -> {r['accuracy_shrunk']:.4f})"
        checker = "pass" if r["checker_shrunk"] is None else f"FAIL ({r['checker_shrunk'][:90]})"
        print(f"| {name} | {facts['parameters']:,} | {initializer_parameters(out):,} | {expected} "
              f"| {diff} | {checker} |")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "resnet18":
        resnet18(*args)
    elif command == "onnxsim":
        onnxsim_prune(*args)
    elif command == "dead":
        dead(*args)
    elif command == "row":
        row(*args)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
