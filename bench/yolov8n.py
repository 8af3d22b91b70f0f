#!/usr/bin/env python3
"""A detector-sized model for bench/sensitivity.sh: Ultralytics YOLOv8n (its own
`yolov8n.yaml`, 3.2M parameters, 63 Conv weights; random weights, seed 0: nothing is
downloaded) exported as `yolo export format=onnx imgsz=320 opset=17` writes it (static batch
1), and 8 random images of 320x320.

Usage: bench/yolov8n.py OUT_DIR   (writes OUT_DIR/yolov8n.onnx and OUT_DIR/inputs.npz)
Needs: pip install torch ultralytics onnx onnxslim numpy.
"""
import os
import shutil
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")  # no network checks, no analytics
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ultralytics import YOLO  # noqa: E402

out = os.path.abspath(sys.argv[1])
torch.manual_seed(0)
work = os.path.join(out, "export")
os.makedirs(work, exist_ok=True)
os.chdir(work)
exported = YOLO("yolov8n.yaml").export(format="onnx", imgsz=320, opset=17)
shutil.move(exported, os.path.join(out, "yolov8n.onnx"))
rng = np.random.default_rng(0)
np.savez(os.path.join(out, "inputs.npz"), images=rng.random((8, 3, 320, 320), dtype=np.float32))
