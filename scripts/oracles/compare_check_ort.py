#!/usr/bin/env python3
"""Computes what `onnx-prune check` reports, with onnxruntime, for comparison and timing.

Usage: scripts/oracles/compare_check_ort.py REFERENCE CANDIDATE INPUTS.npz [LABELS_KEY]
Prints JSON with the same keys as `check --report` and the seconds the comparison took.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

reference, candidate, inputs = sys.argv[1:4]
labels_key = sys.argv[4] if len(sys.argv) > 4 else None
start = time.perf_counter()
data = np.load(inputs)
sessions = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (reference, candidate)]
names = [i.name for i in sessions[0].get_inputs()]
feeds = {n: data[n] for n in names}
ref, cand = (s.run(None, feeds) for s in sessions)
outputs = []
for meta, r, c in zip(sessions[0].get_outputs(), ref, cand):
    r64, c64 = r.astype(np.float64), c.astype(np.float64)
    d = np.abs(c64 - r64)
    entry = {
        "name": meta.name,
        "max_abs": float(d.max()),
        "mean_abs": float(d.mean()),
        "rmse": float(np.sqrt((d * d).mean())),
        "cosine": float((r64 * c64).sum() / (np.linalg.norm(r64) * np.linalg.norm(c64))),
        "worst_sample": int(d.reshape(len(d), -1).max(axis=1).argmax()),
    }
    if r.ndim == 2 and r.shape[1] > 1:
        entry["top1_agreement"] = float((r.argmax(1) == c.argmax(1)).mean())
    outputs.append(entry)
report = {"samples": len(next(iter(feeds.values()))), "outputs": outputs}
if labels_key:
    labels = data[labels_key]
    report["accuracy"] = {"reference": float((ref[0].argmax(1) == labels).mean()),
                          "candidate": float((cand[0].argmax(1) == labels).mean())}
report["seconds"] = time.perf_counter() - start
print(json.dumps(report, indent=1))
