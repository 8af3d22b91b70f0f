#!/usr/bin/env python3
"""Exports a small text-direction classifier CNN with torch.onnx.export, as OCR pipelines ship
one (input [N, 3, 48, 192], dynamic batch, 2 classes), and writes N random images to an .npz.

Usage: bench/check/export_cnn.py OUT.onnx INPUTS.npz [SAMPLES]
Needs: pip install torch onnx numpy. Seeded: the same versions give the same model.
"""
import sys

import numpy as np
import torch
from torch import nn

out, inputs = sys.argv[1], sys.argv[2]
samples = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
torch.manual_seed(0)


def block(cin, cout, stride):
    """Depthwise-separable block, as PP-LCNet / MobileNet classifiers are built."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.Hardswish(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.Hardswish(),
    )


class DirectionClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(block(16, 32, 1), block(32, 64, 2), block(64, 64, 1),
                                    block(64, 128, 2), block(128, 128, 1), block(128, 256, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, 2)

    def forward(self, x):
        x = self.pool(self.blocks(self.stem(x)))
        return torch.softmax(self.fc(torch.flatten(x, 1)), dim=1)


model = DirectionClassifier().eval()
for m in model.modules():  # trained-looking BatchNorm statistics instead of the identity
    if isinstance(m, nn.BatchNorm2d):
        m.running_mean.uniform_(-0.1, 0.1)
        m.running_var.uniform_(0.5, 1.5)
x = torch.rand(1, 3, 48, 192)
torch.onnx.export(model, (x,), out, input_names=["x"], output_names=["prob"],
                  dynamic_axes={"x": {0: "batch"}, "prob": {0: "batch"}}, opset_version=17, dynamo=False)
rng = np.random.default_rng(0)
np.savez(inputs, x=rng.random((samples, 3, 48, 192), dtype=np.float32))
