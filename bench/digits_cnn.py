#!/usr/bin/env python3
"""A small real CNN for bench/accuracy.sh: trained here on scikit-learn's digits (8x8).

  python3 bench/digits_cnn.py [OUT_DIR]   (default bench/out/digits-cnn; needs: pip install
                                          torch onnx onnxscript scikit-learn numpy)

Writes OUT_DIR/dense.onnx (torch.onnx.export, dynamo, opset 18, input `pixels` [N, 1, 8, 8])
and OUT_DIR/test_set.npz (`pixels` float32 [450, 1, 8, 8], `labels` int64 [450]): the 25%
stratified test split (random_state 0), as the MLP sample's. Seeded.
Model: Conv 1->16 3x3 pad 1, ReLU, Conv 16->32 3x3 pad 1, ReLU, MaxPool 2, Linear 512->64, ReLU,
Linear 64->10; Adam (lr 1e-3), 30 epochs, batches of 64.
"""
import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y,
                                                        random_state=0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for epoch in range(30):
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            batch = order[i:i + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(xt[batch]), yt[batch]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"PyTorch test accuracy: {accuracy:.3f}")
    batch = torch.export.Dim("N", min=1)
    torch.onnx.export(model, (torch.from_numpy(x_test[:4]),), os.path.join(out, "dense.onnx"),
                      dynamo=True, opset_version=18, input_names=["pixels"],
                      dynamic_shapes={"input": {0: batch}}, external_data=False)
    np.savez(os.path.join(out, "test_set.npz"), pixels=x_test, labels=y_test)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/out/digits-cnn")
